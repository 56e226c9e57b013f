-- stage_listing is the fsspec listing, registered by the caller as a relation.
INSERT INTO clothing_stage_directory
SELECT $stage, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, FILE_URL FROM stage_listing;
