-- The listing's entries (stage_listing, registered by the caller) the directory does not hold:
-- new files, and changed ones whose old row delete_stale_stage_directory removed.
INSERT INTO clothing_stage_directory
    (STAGE, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, FILE_URL, ERROR)
SELECT $stage, l.RELATIVE_PATH, l.SIZE, l.LAST_MODIFIED, l.ETAG, l.FILE_URL,
       CAST(l.ERROR AS VARCHAR)
FROM stage_listing AS l
WHERE NOT EXISTS (
    SELECT 1
    FROM clothing_stage_directory AS d
    WHERE d.STAGE = $stage AND d.RELATIVE_PATH = l.RELATIVE_PATH
);
