-- The k embeddings of a model version most similar (cosine) to the vector, most similar first,
-- with the test images' predicted TYPE (the train label is the path's class folder).
SELECT e.RELATIVE_PATH, e.STAGE,
    VECTOR_COSINE_SIMILARITY(
        e.EMBEDDING, PARSE_JSON(%(vector)s)::VECTOR(FLOAT, __DIMENSION__)
    ) AS SIMILARITY,
    t.TYPE AS PREDICTED
FROM clothing_embeddings AS e
LEFT JOIN clothing_test AS t ON e.STAGE = 'test' AND t.RELATIVE_PATH = e.RELATIVE_PATH
WHERE e.ERROR IS NULL AND e.MODEL_VERSION = %(model_version)s
ORDER BY SIMILARITY DESC, e.STAGE, e.RELATIVE_PATH
LIMIT %(k)s;
