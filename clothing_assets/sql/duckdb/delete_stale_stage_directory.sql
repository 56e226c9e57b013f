-- Entries of the stage that its listing (stage_listing, registered by the caller) no longer
-- holds as they are: deleted, or changed in any column. Unchanged rows are left alone, so a
-- refresh with nothing changed writes nothing.
DELETE FROM clothing_stage_directory AS d
WHERE d.STAGE = $stage
  AND NOT EXISTS (
      SELECT 1
      FROM stage_listing AS l
      WHERE l.RELATIVE_PATH = d.RELATIVE_PATH
        AND l.SIZE = d.SIZE
        AND CAST(l.LAST_MODIFIED AS TIMESTAMPTZ) IS NOT DISTINCT FROM d.LAST_MODIFIED
        AND CAST(l.ETAG AS VARCHAR) IS NOT DISTINCT FROM d.ETAG
        AND l.FILE_URL = d.FILE_URL
        AND CAST(l.ERROR AS VARCHAR) IS NOT DISTINCT FROM d.ERROR
  );
