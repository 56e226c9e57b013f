-- One statement, in the caller's transaction, writes a batch of embeddings. A row is written
-- only while its catalog row lists the file as it was read (size, last-modified and ETag
-- equal); a row of the same file, stage and version is replaced.
MERGE INTO clothing_embeddings AS e
USING (
    SELECT b.RELATIVE_PATH, b.STAGE, b.MODEL_VERSION, b.SIZE, b.LAST_MODIFIED, b.ETAG,
        b.CONTENT_SHA256,
        PARSE_JSON(b.EMBEDDING)::VECTOR(FLOAT, __DIMENSION__) AS EMBEDDING,
        b.ERROR, b.EMBEDDED_AT
    FROM IDENTIFIER(%(batch)s) AS b
    WHERE (b.STAGE = 'train' AND EXISTS (
            SELECT 1 FROM clothing_train AS c
            WHERE c.RELATIVE_PATH = b.RELATIVE_PATH AND c.SIZE = b.SIZE
                AND EQUAL_NULL(c.LAST_MODIFIED, b.LAST_MODIFIED) AND EQUAL_NULL(c.ETAG, b.ETAG)))
        OR (b.STAGE = 'test' AND EXISTS (
            SELECT 1 FROM clothing_test AS c
            WHERE c.RELATIVE_PATH = b.RELATIVE_PATH AND c.SIZE = b.SIZE
                AND EQUAL_NULL(c.LAST_MODIFIED, b.LAST_MODIFIED) AND EQUAL_NULL(c.ETAG, b.ETAG)))
) AS s
ON e.STAGE = s.STAGE AND e.RELATIVE_PATH = s.RELATIVE_PATH AND e.MODEL_VERSION = s.MODEL_VERSION
WHEN MATCHED THEN UPDATE SET SIZE = s.SIZE, LAST_MODIFIED = s.LAST_MODIFIED, ETAG = s.ETAG,
    CONTENT_SHA256 = s.CONTENT_SHA256, EMBEDDING = s.EMBEDDING, ERROR = s.ERROR,
    EMBEDDED_AT = s.EMBEDDED_AT
WHEN NOT MATCHED THEN INSERT (RELATIVE_PATH, STAGE, MODEL_VERSION, SIZE, LAST_MODIFIED, ETAG,
        CONTENT_SHA256, EMBEDDING, ERROR, EMBEDDED_AT)
    VALUES (s.RELATIVE_PATH, s.STAGE, s.MODEL_VERSION, s.SIZE, s.LAST_MODIFIED, s.ETAG,
        s.CONTENT_SHA256, s.EMBEDDING, s.ERROR, s.EMBEDDED_AT);
