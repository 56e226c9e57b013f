-- ETAG (from the stage listing; NULL for local files, which have none) detects a rewritten
-- object whose size and last-modified did not change.
CREATE TABLE IF NOT EXISTS clothing_test (
    FILE_URL VARCHAR NOT NULL,
    RELATIVE_PATH VARCHAR PRIMARY KEY,
    SIZE BIGINT NOT NULL,
    LAST_MODIFIED TIMESTAMPTZ,
    ETAG VARCHAR,
    PRED_TIMESTAMP TIMESTAMPTZ,
    TYPE VARCHAR,
    CONFIDENCE DOUBLE,
    MODEL_VERSION VARCHAR,
    ERROR VARCHAR
);
