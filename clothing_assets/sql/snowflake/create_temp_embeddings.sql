-- A per-call batch of embeddings, loaded by write_pandas; EMBEDDING travels as JSON text (an
-- array of floats) and becomes a VECTOR in the statement that applies the batch.
CREATE TEMPORARY TABLE IDENTIFIER(%(batch)s) (
    RELATIVE_PATH VARCHAR,
    STAGE VARCHAR,
    MODEL_VERSION VARCHAR,
    SIZE NUMBER(38, 0),
    LAST_MODIFIED TIMESTAMP_TZ,
    ETAG VARCHAR,
    CONTENT_SHA256 VARCHAR,
    EMBEDDING VARCHAR,
    ERROR VARCHAR,
    EMBEDDED_AT TIMESTAMP_TZ,
    PHASH NUMBER(19, 0),
    PHASH_CENTER NUMBER(19, 0)
);
