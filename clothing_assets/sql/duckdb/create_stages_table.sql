-- The stages this warehouse knows: DuckDB's stand-in for Snowflake's CREATE STAGE.
CREATE TABLE IF NOT EXISTS clothing_stages (
    NAME VARCHAR PRIMARY KEY,
    URL VARCHAR NOT NULL,
    CREATED_AT TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    REFRESHED_AT TIMESTAMPTZ
);
