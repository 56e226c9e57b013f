-- One statement writes every prediction back. A row whose file changed since it was read for
-- scoring (size or last-modified differ) is left alone: its prediction would be stale.
UPDATE clothing_test AS t
SET TYPE = p.TYPE,
    CONFIDENCE = p.CONFIDENCE,
    PRED_TIMESTAMP = p.PRED_TIMESTAMP,
    MODEL_VERSION = p.MODEL_VERSION,
    ERROR = p.ERROR
FROM clothing_predictions_batch AS p
WHERE t.RELATIVE_PATH = p.RELATIVE_PATH
    AND t.SIZE = p.SIZE
    AND t.LAST_MODIFIED IS NOT DISTINCT FROM p.LAST_MODIFIED;
