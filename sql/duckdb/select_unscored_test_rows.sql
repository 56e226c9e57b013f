-- Rows the given model has not scored yet: new or changed files, or any row after a new model.
SELECT RELATIVE_PATH, FILE_URL, SIZE, LAST_MODIFIED
FROM clothing_test
WHERE MODEL_VERSION IS DISTINCT FROM $model_version
ORDER BY RELATIVE_PATH;
