INSERT INTO clothing_models (
    VERSION, SHA256, URI, CREATED_AT, ARCHITECTURE, IMAGE_SIZE, CLASSES, VAL_ACCURACY, VAL_ROWS,
    TRAIN_ROWS, CATALOG_FINGERPRINT, COMPARED_WITH, CHAMPION_VAL_ACCURACY, STATUS, REASON, RUN_ID
) VALUES (
    %(version)s, %(sha256)s, %(uri)s, %(created_at)s, %(architecture)s, %(image_size)s,
    %(classes)s, %(val_accuracy)s, %(val_rows)s, %(train_rows)s, %(catalog_fingerprint)s,
    %(compared_with)s, %(champion_val_accuracy)s, %(status)s, %(reason)s, %(run_id)s
);
