-- Embeddings of files no longer cataloged as they were read (changed or removed), and of model
-- versions whose file the model store deleted: nothing can use them again.
DELETE FROM clothing_embeddings
WHERE NOT EXISTS (
        SELECT 1 FROM clothing_train AS c
        WHERE clothing_embeddings.STAGE = 'train' AND c.RELATIVE_PATH = clothing_embeddings.RELATIVE_PATH AND c.SIZE = clothing_embeddings.SIZE
            AND c.LAST_MODIFIED IS NOT DISTINCT FROM clothing_embeddings.LAST_MODIFIED
            AND c.ETAG IS NOT DISTINCT FROM clothing_embeddings.ETAG)
    AND NOT EXISTS (
        SELECT 1 FROM clothing_test AS c
        WHERE clothing_embeddings.STAGE = 'test' AND c.RELATIVE_PATH = clothing_embeddings.RELATIVE_PATH AND c.SIZE = clothing_embeddings.SIZE
            AND c.LAST_MODIFIED IS NOT DISTINCT FROM clothing_embeddings.LAST_MODIFIED
            AND c.ETAG IS NOT DISTINCT FROM clothing_embeddings.ETAG)
    OR EXISTS (
        SELECT 1 FROM clothing_models AS m
        WHERE m.VERSION = clothing_embeddings.MODEL_VERSION AND m.DELETED_AT IS NOT NULL);
