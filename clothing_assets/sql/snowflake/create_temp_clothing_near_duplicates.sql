-- A per-call batch of pairs, loaded with write_pandas and then copied in one transaction.
CREATE TEMPORARY TABLE IDENTIFIER(%(batch)s) (
    PATH_A VARCHAR,
    STAGE_A VARCHAR,
    PATH_B VARCHAR,
    STAGE_B VARCHAR,
    SIMILARITY DOUBLE,
    KIND VARCHAR
);
