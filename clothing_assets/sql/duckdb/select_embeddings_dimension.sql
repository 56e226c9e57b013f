-- The embedding length clothing_embeddings was created for (its type, e.g. FLOAT[1280]);
-- no row when the table does not exist yet.
SELECT data_type
FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = current_schema()
    AND table_name = 'clothing_embeddings' AND column_name = 'EMBEDDING';
