-- What changes when a model version's searchable embeddings or the test predictions that label
-- them change: the search matrix of that version is read again only then.
SELECT
    (SELECT count(*) FROM clothing_embeddings
        WHERE ERROR IS NULL AND MODEL_VERSION = $model_version) AS ROWS,
    (SELECT max(EMBEDDED_AT) FROM clothing_embeddings
        WHERE ERROR IS NULL AND MODEL_VERSION = $model_version) AS NEWEST,
    (SELECT max(PRED_TIMESTAMP) FROM clothing_test) AS PREDICTED;
