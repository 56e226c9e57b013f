-- The champion that `version` replaces is retired: record that before the status changes.
INSERT INTO clothing_model_events (VERSION, CHANGED_AT, STATUS, REASON, RUN_ID)
SELECT VERSION, $changed_at, 'retired', $reason, $run_id
FROM clothing_models WHERE STATUS = 'champion' AND VERSION <> $version;
