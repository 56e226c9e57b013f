-- One statement, in the caller's transaction, writes every prediction back. A row whose file
-- changed since it was read for scoring (size or last-modified differ) does not join and is
-- left alone: its prediction would be stale. (UPDATE ... FROM rather than MERGE: the same
-- effect, and the form fakesnow runs inside a transaction.)
UPDATE clothing_test AS t
SET TYPE = p.TYPE,
    CONFIDENCE = p.CONFIDENCE,
    PRED_TIMESTAMP = p.PRED_TIMESTAMP,
    MODEL_VERSION = p.MODEL_VERSION,
    ERROR = p.ERROR
FROM (
    SELECT RELATIVE_PATH, SIZE, LAST_MODIFIED, TYPE, CONFIDENCE, PRED_TIMESTAMP, MODEL_VERSION,
        ERROR
    FROM IDENTIFIER(%(batch)s)
) AS p
WHERE t.RELATIVE_PATH = p.RELATIVE_PATH
    AND t.SIZE = p.SIZE
    AND EQUAL_NULL(t.LAST_MODIFIED, p.LAST_MODIFIED);
