-- catalog_errors holds (RELATIVE_PATH, ERROR) for files training could not use.
CREATE OR REPLACE TEMPORARY TABLE clothing_catalog_errors AS
SELECT CAST(RELATIVE_PATH AS VARCHAR) AS RELATIVE_PATH, CAST(ERROR AS VARCHAR) AS ERROR
FROM catalog_errors;
