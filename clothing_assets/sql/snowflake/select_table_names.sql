-- The tables of the connection's schema: a read-only connection creates none, so it checks
-- that the assets were materialized into this schema.
SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = CURRENT_SCHEMA();
