-- A model version's embeddings (no ERROR rows) with the test images' predicted TYPE: the rows
-- of the in-process search matrix (resources/embedding_index.py).
SELECT e.RELATIVE_PATH, e.STAGE, e.EMBEDDING, t.TYPE AS PREDICTED
FROM clothing_embeddings AS e
LEFT JOIN clothing_test AS t ON e.STAGE = 'test' AND t.RELATIVE_PATH = e.RELATIVE_PATH
WHERE e.ERROR IS NULL AND e.MODEL_VERSION = $model_version
ORDER BY e.STAGE, e.RELATIVE_PATH;
