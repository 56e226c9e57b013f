INSERT INTO clothing_model_events (VERSION, CHANGED_AT, STATUS, REASON, RUN_ID)
VALUES (%(version)s, %(changed_at)s, %(status)s, %(reason)s, %(run_id)s);
