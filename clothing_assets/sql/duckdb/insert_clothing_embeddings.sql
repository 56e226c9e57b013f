-- One statement writes a chunk of embeddings. A row is written only while its catalog row
-- lists the file as it was read (size, last-modified and ETag equal): an embedding of a
-- since-changed or removed file would be stale. A row of the same file, stage and version
-- is replaced (a file embedded again after an ERROR of the moment).
-- Columns are named: a table that gained the hash columns has them last.
INSERT OR REPLACE INTO clothing_embeddings (RELATIVE_PATH, STAGE, MODEL_VERSION, SIZE,
    LAST_MODIFIED, ETAG, CONTENT_SHA256, EMBEDDING, ERROR, EMBEDDED_AT, PHASH, PHASH_CENTER)
SELECT b.RELATIVE_PATH, b.STAGE, b.MODEL_VERSION, b.SIZE, b.LAST_MODIFIED, b.ETAG,
    b.CONTENT_SHA256, b.EMBEDDING, b.ERROR, b.EMBEDDED_AT, b.PHASH, b.PHASH_CENTER
FROM clothing_embeddings_batch AS b
WHERE (b.STAGE = 'train' AND EXISTS (
        SELECT 1 FROM clothing_train AS c
        WHERE c.RELATIVE_PATH = b.RELATIVE_PATH AND c.SIZE = b.SIZE
            AND c.LAST_MODIFIED IS NOT DISTINCT FROM b.LAST_MODIFIED
            AND c.ETAG IS NOT DISTINCT FROM b.ETAG))
    OR (b.STAGE = 'test' AND EXISTS (
        SELECT 1 FROM clothing_test AS c
        WHERE c.RELATIVE_PATH = b.RELATIVE_PATH AND c.SIZE = b.SIZE
            AND c.LAST_MODIFIED IS NOT DISTINCT FROM b.LAST_MODIFIED
            AND c.ETAG IS NOT DISTINCT FROM b.ETAG));
