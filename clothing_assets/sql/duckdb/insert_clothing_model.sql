INSERT INTO clothing_models (
    VERSION, SHA256, URI, CREATED_AT, ARCHITECTURE, IMAGE_SIZE, CLASSES, VAL_ACCURACY, VAL_ROWS,
    TRAIN_ROWS, CATALOG_FINGERPRINT, COMPARED_WITH, CHAMPION_VAL_ACCURACY, STATUS, REASON, RUN_ID
) VALUES (
    $version, $sha256, $uri, $created_at, $architecture, $image_size, $classes, $val_accuracy,
    $val_rows, $train_rows, $catalog_fingerprint, $compared_with, $champion_val_accuracy,
    $status, $reason, $run_id
);
