-- One presigned HTTPS URL per path of a batch, in the order given. The paths parameter is a
-- bound JSON array of relative paths; the URLs expire after the expiry parameter (seconds), so
-- a batch mints them just before its files are read.
SELECT f.INDEX AS POSITION, GET_PRESIGNED_URL(@__STAGE__, f.VALUE::STRING, %(expiry)s) AS URL
FROM TABLE(FLATTEN(INPUT => PARSE_JSON(%(paths)s))) AS f
ORDER BY f.INDEX;
