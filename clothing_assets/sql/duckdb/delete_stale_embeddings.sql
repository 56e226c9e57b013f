-- Embeddings of files no longer cataloged as they were read (changed or removed), and of model
-- versions whose file the model store deleted: nothing can use them again.
DELETE FROM clothing_embeddings AS e
WHERE NOT EXISTS (
        SELECT 1 FROM clothing_train AS c
        WHERE e.STAGE = 'train' AND c.RELATIVE_PATH = e.RELATIVE_PATH AND c.SIZE = e.SIZE
            AND c.LAST_MODIFIED IS NOT DISTINCT FROM e.LAST_MODIFIED
            AND c.ETAG IS NOT DISTINCT FROM e.ETAG)
    AND NOT EXISTS (
        SELECT 1 FROM clothing_test AS c
        WHERE e.STAGE = 'test' AND c.RELATIVE_PATH = e.RELATIVE_PATH AND c.SIZE = e.SIZE
            AND c.LAST_MODIFIED IS NOT DISTINCT FROM e.LAST_MODIFIED
            AND c.ETAG IS NOT DISTINCT FROM e.ETAG)
    OR EXISTS (
        SELECT 1 FROM clothing_models AS m
        WHERE m.VERSION = e.MODEL_VERSION AND m.DELETED_AT IS NOT NULL);
