-- Sync the test catalog from its stage's directory. A changed file (size, last-modified or
-- ETag) loses its prediction so that it is scored again; unchanged rows keep theirs. An entry
-- the listing refused (ERROR in the directory) carries that ERROR and no prediction, and is
-- never scored. A row stored before the catalog kept ETags (ETAG NULL, size and time equal)
-- only gains its ETag: upgrading does not rescore the whole stage.
MERGE INTO clothing_test AS t
USING (
    SELECT FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, ERROR
    FROM clothing_stage_directory WHERE STAGE = $stage
) AS s
ON t.RELATIVE_PATH = s.RELATIVE_PATH
WHEN MATCHED AND t.ETAG IS NULL AND s.ETAG IS NOT NULL AND t.SIZE = s.SIZE
        AND t.LAST_MODIFIED IS NOT DISTINCT FROM s.LAST_MODIFIED
        AND (s.ERROR IS NULL OR t.ERROR IS NOT DISTINCT FROM s.ERROR)
    THEN UPDATE SET ETAG = s.ETAG
WHEN MATCHED AND (t.SIZE IS DISTINCT FROM s.SIZE OR t.LAST_MODIFIED IS DISTINCT FROM s.LAST_MODIFIED
        OR t.ETAG IS DISTINCT FROM s.ETAG
        OR (s.ERROR IS NOT NULL AND t.ERROR IS DISTINCT FROM s.ERROR))
    THEN UPDATE SET FILE_URL = s.FILE_URL, SIZE = s.SIZE, LAST_MODIFIED = s.LAST_MODIFIED,
        ETAG = s.ETAG, PRED_TIMESTAMP = NULL, TYPE = NULL, CONFIDENCE = NULL,
        MODEL_VERSION = NULL, ERROR = s.ERROR
WHEN NOT MATCHED BY TARGET
    THEN INSERT (FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, ERROR)
    VALUES (s.FILE_URL, s.RELATIVE_PATH, s.SIZE, s.LAST_MODIFIED, s.ETAG, s.ERROR)
WHEN NOT MATCHED BY SOURCE THEN DELETE
RETURNING merge_action;
