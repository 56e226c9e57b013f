-- Every status change of a registered model, with its reason: the registry's history.
CREATE TABLE IF NOT EXISTS clothing_model_events (
    VERSION VARCHAR NOT NULL,
    CHANGED_AT TIMESTAMP_TZ NOT NULL,
    STATUS VARCHAR NOT NULL,
    REASON VARCHAR NOT NULL,
    RUN_ID VARCHAR
);
