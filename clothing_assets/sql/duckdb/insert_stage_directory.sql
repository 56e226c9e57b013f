-- stage_listing is the fsspec listing, registered by the caller as a relation.
INSERT INTO clothing_stage_directory
    (STAGE, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, FILE_URL, ERROR)
SELECT $stage, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, FILE_URL, CAST(ERROR AS VARCHAR)
FROM stage_listing;
