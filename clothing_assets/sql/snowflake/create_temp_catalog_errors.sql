-- A per-call batch of (RELATIVE_PATH, ERROR) for training files that could not be used.
CREATE TEMPORARY TABLE IDENTIFIER(%(batch)s) (
    RELATIVE_PATH VARCHAR,
    ERROR VARCHAR
);
