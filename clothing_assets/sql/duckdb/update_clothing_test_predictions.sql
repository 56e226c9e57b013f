-- One statement writes every prediction back. A row is left alone when its file changed since
-- it was read for scoring (size, last-modified or ETag differ: the prediction would be stale,
-- even for an object overwritten with the same size and time), when the predicting version's
-- file was deleted from the model store, or when the row already holds a prediction of the
-- champion or of a newer version and this one is not the champion's: a late run with an older
-- model never overwrites a newer model's predictions.
UPDATE clothing_test AS t
SET TYPE = p.TYPE,
    CONFIDENCE = p.CONFIDENCE,
    PRED_TIMESTAMP = p.PRED_TIMESTAMP,
    MODEL_VERSION = p.MODEL_VERSION,
    ERROR = p.ERROR
FROM clothing_predictions_batch AS p
WHERE t.RELATIVE_PATH = p.RELATIVE_PATH
    AND t.SIZE = p.SIZE
    AND t.LAST_MODIFIED IS NOT DISTINCT FROM p.LAST_MODIFIED
    AND t.ETAG IS NOT DISTINCT FROM p.ETAG
    AND NOT EXISTS (
        SELECT 1 FROM clothing_models AS d
        WHERE d.VERSION = p.MODEL_VERSION AND d.DELETED_AT IS NOT NULL
    )
    AND (
        t.MODEL_VERSION IS NULL
        OR EXISTS (
            SELECT 1 FROM clothing_models AS c
            WHERE c.VERSION = p.MODEL_VERSION AND c.STATUS = 'champion'
        )
        OR NOT EXISTS (
            SELECT 1 FROM clothing_models AS tm, clothing_models AS pm
            WHERE tm.VERSION = t.MODEL_VERSION AND pm.VERSION = p.MODEL_VERSION
                AND tm.VERSION <> pm.VERSION
                AND (tm.STATUS = 'champion' OR tm.CREATED_AT > pm.CREATED_AT)
        )
    );
