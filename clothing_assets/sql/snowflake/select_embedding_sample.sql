-- Up to %(limit)s embeddings (no ERROR rows) of one model version, the same ones on every run
-- while the table holds them: those with the lowest hash of their stage and path.
SELECT RELATIVE_PATH, STAGE, EMBEDDING
FROM clothing_embeddings
WHERE ERROR IS NULL AND MODEL_VERSION = %(model_version)s
ORDER BY HASH(STAGE, RELATIVE_PATH), STAGE, RELATIVE_PATH
LIMIT %(limit)s;
