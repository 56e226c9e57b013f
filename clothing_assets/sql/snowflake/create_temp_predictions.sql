-- A per-run batch of predictions, loaded by write_pandas; the batch name is fresh per call,
-- so concurrent runs never share it. Dropped by the caller; gone with the session anyway.
CREATE TEMPORARY TABLE IDENTIFIER(%(batch)s) (
    RELATIVE_PATH VARCHAR,
    SIZE NUMBER(38, 0),
    LAST_MODIFIED TIMESTAMP_TZ,
    ETAG VARCHAR,
    TYPE VARCHAR,
    CONFIDENCE FLOAT,
    PRED_TIMESTAMP TIMESTAMP_TZ,
    MODEL_VERSION VARCHAR,
    ERROR VARCHAR
);
