-- The model version of the most recently written embedding (of any stage).
SELECT MODEL_VERSION
FROM clothing_embeddings
WHERE ERROR IS NULL
ORDER BY EMBEDDED_AT DESC, MODEL_VERSION
LIMIT 1;
