UPDATE clothing_models
SET STATUS = %(status)s, REASON = %(reason)s,
    PROMOTED_AT = CASE WHEN %(status)s = 'champion' THEN %(changed_at)s ELSE PROMOTED_AT END
WHERE VERSION = %(version)s;
