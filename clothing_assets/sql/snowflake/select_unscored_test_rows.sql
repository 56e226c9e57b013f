-- Rows the given model has not scored yet: new or changed files, or any row after a new model.
-- A row with an ERROR and no MODEL_VERSION was refused before scoring and is never read.
SELECT RELATIVE_PATH, FILE_URL, SIZE, LAST_MODIFIED, ETAG
FROM clothing_test
WHERE MODEL_VERSION IS DISTINCT FROM %(model_version)s
    AND NOT (ERROR IS NOT NULL AND MODEL_VERSION IS NULL)
ORDER BY RELATIVE_PATH;
