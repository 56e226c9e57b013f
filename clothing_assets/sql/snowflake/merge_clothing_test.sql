-- Sync the test catalog from the stage's directory table in one statement. A changed file
-- (size, last-modified or ETag) loses its prediction so that it is scored again; unchanged rows
-- keep theirs; vanished files are deleted. Snowflake's MERGE has no WHEN NOT MATCHED BY SOURCE,
-- so the source is the directory FULL OUTER JOINed with the table: a row whose file vanished
-- arrives with VANISHED = TRUE and is deleted.
-- A row stored before the catalog kept ETags (ETAG NULL, size and time equal) only gains its
-- ETag: upgrading does not count every file as changed.
MERGE INTO clothing_test AS t
USING (
    SELECT
        COALESCE(d.RELATIVE_PATH, c.RELATIVE_PATH) AS KEY_PATH,
        d.FILE_URL,
        d.RELATIVE_PATH,
        d.SIZE,
        d.LAST_MODIFIED,
        d.ETAG,
        d.RELATIVE_PATH IS NULL AS VANISHED
    FROM (
        SELECT RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, FILE_URL FROM DIRECTORY(@__STAGE__)
    ) AS d
    FULL OUTER JOIN clothing_test AS c ON c.RELATIVE_PATH = d.RELATIVE_PATH
) AS s
ON t.RELATIVE_PATH = s.KEY_PATH
WHEN MATCHED AND s.VANISHED THEN DELETE
WHEN MATCHED AND t.ETAG IS NULL AND s.ETAG IS NOT NULL AND t.SIZE = s.SIZE
        AND EQUAL_NULL(t.LAST_MODIFIED, s.LAST_MODIFIED)
    THEN UPDATE SET ETAG = s.ETAG
WHEN MATCHED AND (t.SIZE IS DISTINCT FROM s.SIZE OR t.LAST_MODIFIED IS DISTINCT FROM s.LAST_MODIFIED
        OR t.ETAG IS DISTINCT FROM s.ETAG)
    THEN UPDATE SET FILE_URL = s.FILE_URL, SIZE = s.SIZE, LAST_MODIFIED = s.LAST_MODIFIED,
        ETAG = s.ETAG, PRED_TIMESTAMP = NULL, TYPE = NULL, CONFIDENCE = NULL,
        MODEL_VERSION = NULL, ERROR = NULL
WHEN NOT MATCHED
    THEN INSERT (FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG)
    VALUES (s.FILE_URL, s.RELATIVE_PATH, s.SIZE, s.LAST_MODIFIED, s.ETAG);
