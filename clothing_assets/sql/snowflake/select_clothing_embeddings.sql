-- The embeddings (no ERROR rows) of one model version, of one stage or both (%(stage)s NULL).
SELECT RELATIVE_PATH, STAGE, MODEL_VERSION, CONTENT_SHA256, EMBEDDING, PHASH, PHASH_CENTER
FROM clothing_embeddings
WHERE ERROR IS NULL AND MODEL_VERSION = %(model_version)s
    AND (%(stage)s::VARCHAR IS NULL OR STAGE = %(stage)s)
ORDER BY STAGE, RELATIVE_PATH;
