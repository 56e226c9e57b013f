-- The embeddings (no ERROR rows) of one model version, of one stage or both ($stage NULL).
SELECT RELATIVE_PATH, STAGE, MODEL_VERSION, CONTENT_SHA256, EMBEDDING, PHASH, PHASH_CENTER
FROM clothing_embeddings
WHERE ERROR IS NULL AND MODEL_VERSION = $model_version
    AND ($stage IS NULL OR STAGE = $stage)
ORDER BY STAGE, RELATIVE_PATH;
