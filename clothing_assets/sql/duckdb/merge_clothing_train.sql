-- Sync the train catalog from its stage's directory: insert new files, refresh changed ones
-- (size, last-modified or ETag; clearing their ERROR), delete vanished ones. Unchanged rows are
-- not touched. A row stored before the catalog kept ETags (ETAG NULL, size and time equal)
-- only gains its ETag.
MERGE INTO clothing_train AS t
USING (
    SELECT
        FILE_URL,
        RELATIVE_PATH,
        SIZE,
        LAST_MODIFIED,
        ETAG,
        -- an entry the listing refused keeps its reason; an image's class is its lowest
        -- folder, so a file at the stage root has none
        coalesce(
            ERROR,
            CASE WHEN strpos(RELATIVE_PATH, '/') = 0
                THEN 'no class folder: file is at the stage root' END
        ) AS ERROR
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
        ETAG = s.ETAG, ERROR = s.ERROR
WHEN NOT MATCHED BY TARGET
    THEN INSERT (FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, ERROR)
    VALUES (s.FILE_URL, s.RELATIVE_PATH, s.SIZE, s.LAST_MODIFIED, s.ETAG, s.ERROR)
WHEN NOT MATCHED BY SOURCE THEN DELETE
RETURNING merge_action;
