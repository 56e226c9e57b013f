-- clothing_test summarised as summarize_stage_directory_state summarises a stage: equal when
-- the catalog holds exactly the stage's files (a fresh sensor then requests nothing).
SELECT
    COUNT(*) AS FILE_COUNT,
    COALESCE(SUM(SIZE), 0) AS TOTAL_BYTES,
    MAX(LAST_MODIFIED) AS LAST_MODIFIED,
    BITXOR_AGG(HASH(RELATIVE_PATH, SIZE, DATE_PART(EPOCH_MICROSECOND, LAST_MODIFIED), ETAG))
        AS FILES_HASH
FROM clothing_test;
