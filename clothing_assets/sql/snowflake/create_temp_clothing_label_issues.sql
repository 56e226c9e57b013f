-- A per-call batch of label issues, loaded with write_pandas and then copied in one
-- transaction.
CREATE TEMPORARY TABLE IDENTIFIER(%(batch)s) (
    RELATIVE_PATH VARCHAR,
    GIVEN VARCHAR,
    SUGGESTED VARCHAR,
    SCORE DOUBLE,
    RANK INTEGER
);
