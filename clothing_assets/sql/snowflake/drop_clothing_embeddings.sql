-- A champion whose embeddings have another length: the stored ones cannot be compared with
-- its own, so the table is made again for the new length (and refilled by image_embeddings).
DROP TABLE IF EXISTS clothing_embeddings;
