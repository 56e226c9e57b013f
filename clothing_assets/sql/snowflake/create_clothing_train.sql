-- ETAG (from DIRECTORY) detects a rewritten file whose size and last-modified did not change.
CREATE TABLE IF NOT EXISTS clothing_train (
    FILE_URL VARCHAR NOT NULL,
    RELATIVE_PATH VARCHAR NOT NULL PRIMARY KEY,
    SIZE NUMBER(38, 0) NOT NULL,
    LAST_MODIFIED TIMESTAMP_TZ,
    ETAG VARCHAR,
    ERROR VARCHAR
);
