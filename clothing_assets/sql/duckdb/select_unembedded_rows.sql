-- Catalog rows of the stage ('train' or 'test') that hold no embedding (or ERROR) of the model
-- version for the file as it is listed now: new or changed files, or every file after a new
-- champion, or an embedding without its perceptual hashes (written before they were stored: the
-- file is read once more so that near_duplicates can confirm its pairs). Rows the catalog
-- refused (an ERROR in clothing_train; an ERROR without a prediction in clothing_test) are never
-- read.
SELECT c.RELATIVE_PATH, c.FILE_URL, c.SIZE, c.LAST_MODIFIED, c.ETAG, $stage AS STAGE
FROM (
    SELECT RELATIVE_PATH, FILE_URL, SIZE, LAST_MODIFIED, ETAG, 'train' AS STAGE
    FROM clothing_train WHERE ERROR IS NULL
    UNION ALL
    SELECT RELATIVE_PATH, FILE_URL, SIZE, LAST_MODIFIED, ETAG, 'test' AS STAGE
    FROM clothing_test WHERE NOT (ERROR IS NOT NULL AND MODEL_VERSION IS NULL)
) AS c
WHERE c.STAGE = $stage
    AND NOT EXISTS (
        SELECT 1 FROM clothing_embeddings AS e
        WHERE e.STAGE = c.STAGE AND e.RELATIVE_PATH = c.RELATIVE_PATH
            AND e.MODEL_VERSION = $model_version AND e.SIZE = c.SIZE
            AND e.LAST_MODIFIED IS NOT DISTINCT FROM c.LAST_MODIFIED
            AND e.ETAG IS NOT DISTINCT FROM c.ETAG
            AND (e.ERROR IS NOT NULL OR e.PHASH IS NOT NULL)
    )
ORDER BY c.RELATIVE_PATH;
