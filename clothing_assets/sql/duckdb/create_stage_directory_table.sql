-- The directory listing of each stage: DuckDB's stand-in for DIRECTORY(@stage). ERROR is set
-- for an entry the listing refused to read (a link out of the stage, a FIFO, an unsafe path).
CREATE TABLE IF NOT EXISTS clothing_stage_directory (
    STAGE VARCHAR NOT NULL,
    RELATIVE_PATH VARCHAR NOT NULL,
    SIZE BIGINT NOT NULL,
    LAST_MODIFIED TIMESTAMPTZ,
    ETAG VARCHAR,
    FILE_URL VARCHAR NOT NULL,
    ERROR VARCHAR,
    PRIMARY KEY (STAGE, RELATIVE_PATH)
);
