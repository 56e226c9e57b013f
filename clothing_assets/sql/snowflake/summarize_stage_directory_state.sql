-- A stage sensor's look at the stage, read from its directory table (just refreshed), never
-- from the bucket: file count, bytes, newest change, and an order-independent hash of every
-- file's path, size, last-modified (as epoch microseconds, whatever its time zone) and ETag.
-- The same summary of a catalog table (summarize_clothing_*_state) equals it when the catalog
-- holds exactly these files. BITXOR_AGG of HASH: exact in 64 bits (a SUM would be a float in
-- fakesnow), and one row per path, so no two equal terms cancel.
SELECT
    COUNT(*) AS FILE_COUNT,
    COALESCE(SUM(SIZE), 0) AS TOTAL_BYTES,
    MAX(LAST_MODIFIED) AS LAST_MODIFIED,
    BITXOR_AGG(HASH(RELATIVE_PATH, SIZE, DATE_PART(EPOCH_MICROSECOND, LAST_MODIFIED), ETAG))
        AS FILES_HASH
FROM DIRECTORY(@__STAGE__);
