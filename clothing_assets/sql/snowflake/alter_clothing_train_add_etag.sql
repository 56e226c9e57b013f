-- Catalogs made before the ETag was stored gain the column (NULL until the next sync
-- fills it without counting the file as changed).
ALTER TABLE clothing_train ADD COLUMN IF NOT EXISTS ETAG VARCHAR;
