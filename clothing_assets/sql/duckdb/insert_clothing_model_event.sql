INSERT INTO clothing_model_events (VERSION, CHANGED_AT, STATUS, REASON, RUN_ID)
VALUES ($version, $changed_at, $status, $reason, $run_id);
