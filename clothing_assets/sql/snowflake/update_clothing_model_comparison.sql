-- The same version trained again (identical bytes): record the new comparison; its file is
-- stored again, so it is no longer deleted.
UPDATE clothing_models
SET COMPARED_WITH = %(compared_with)s, CHAMPION_VAL_ACCURACY = %(champion_val_accuracy)s,
    CATALOG_FINGERPRINT = %(catalog_fingerprint)s, RUN_ID = %(run_id)s, DELETED_AT = NULL
WHERE VERSION = %(version)s;
