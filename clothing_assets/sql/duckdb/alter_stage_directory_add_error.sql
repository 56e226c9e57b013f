-- Warehouse files made before the listing recorded refused entries gain the column.
ALTER TABLE clothing_stage_directory ADD COLUMN IF NOT EXISTS ERROR VARCHAR;
