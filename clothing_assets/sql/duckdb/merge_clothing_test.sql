-- Sync the test catalog from its stage's directory. A changed file loses its prediction so
-- that it is scored again; unchanged rows keep theirs. An entry the listing refused (ERROR in
-- the directory) carries that ERROR and no prediction, and is never scored.
MERGE INTO clothing_test AS t
USING (
    SELECT FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ERROR
    FROM clothing_stage_directory WHERE STAGE = $stage
) AS s
ON t.RELATIVE_PATH = s.RELATIVE_PATH
WHEN MATCHED AND (t.SIZE IS DISTINCT FROM s.SIZE OR t.LAST_MODIFIED IS DISTINCT FROM s.LAST_MODIFIED
        OR (s.ERROR IS NOT NULL AND t.ERROR IS DISTINCT FROM s.ERROR))
    THEN UPDATE SET FILE_URL = s.FILE_URL, SIZE = s.SIZE, LAST_MODIFIED = s.LAST_MODIFIED,
        PRED_TIMESTAMP = NULL, TYPE = NULL, CONFIDENCE = NULL, MODEL_VERSION = NULL,
        ERROR = s.ERROR
WHEN NOT MATCHED BY TARGET
    THEN INSERT (FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ERROR)
    VALUES (s.FILE_URL, s.RELATIVE_PATH, s.SIZE, s.LAST_MODIFIED, s.ERROR)
WHEN NOT MATCHED BY SOURCE THEN DELETE
RETURNING merge_action;
