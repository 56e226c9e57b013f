-- One embedding per file, stage and model version: the champion's L2-normalised penultimate
-- features. SIZE, LAST_MODIFIED and ETAG are the file's as it was read (a row of a since-changed
-- file is stale); CONTENT_SHA256 is the hash of the same bytes. A file that could not be
-- embedded has an ERROR and no EMBEDDING. __DIMENSION__ is the champion's embedding length.
CREATE TABLE IF NOT EXISTS clothing_embeddings (
    RELATIVE_PATH VARCHAR NOT NULL,
    STAGE VARCHAR NOT NULL,
    MODEL_VERSION VARCHAR NOT NULL,
    SIZE NUMBER(38, 0) NOT NULL,
    LAST_MODIFIED TIMESTAMP_TZ,
    ETAG VARCHAR,
    CONTENT_SHA256 VARCHAR,
    EMBEDDING VECTOR(FLOAT, __DIMENSION__),
    ERROR VARCHAR,
    EMBEDDED_AT TIMESTAMP_TZ NOT NULL,
    PRIMARY KEY (STAGE, RELATIVE_PATH, MODEL_VERSION)
);
