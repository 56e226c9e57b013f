-- The column names of clothing_embeddings (none when the table does not exist yet): whether a
-- table made before the perceptual hashes still lacks their columns.
SELECT column_name
FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = current_schema()
    AND table_name = 'clothing_embeddings';
