-- The tables of the file's main schema: a read-only connection creates none, so it checks
-- that the assets were materialized into this file.
SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema();
