-- A clothing_embeddings made before the perceptual hashes gains the centre hash's column.
ALTER TABLE clothing_embeddings ADD COLUMN IF NOT EXISTS PHASH_CENTER NUMBER(19, 0);
