-- A clothing_embeddings made before the perceptual hashes gains the column (NULL in its rows,
-- whose files select_unembedded_rows then lists to be embedded again).
ALTER TABLE clothing_embeddings ADD COLUMN IF NOT EXISTS PHASH BIGINT;
