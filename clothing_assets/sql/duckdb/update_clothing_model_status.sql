UPDATE clothing_models
SET STATUS = $status, REASON = $reason,
    PROMOTED_AT = CASE WHEN $status = 'champion' THEN $changed_at ELSE PROMOTED_AT END
WHERE VERSION = $version;
