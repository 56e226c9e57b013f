-- How many embeddings (no ERROR rows) of one model version each stage holds: counted in the
-- warehouse, so that no vector is read to count them.
SELECT STAGE, count(*) AS EMBEDDINGS
FROM clothing_embeddings
WHERE ERROR IS NULL AND MODEL_VERSION = $model_version
GROUP BY STAGE
ORDER BY STAGE;
