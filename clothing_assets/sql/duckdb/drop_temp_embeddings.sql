DROP TABLE IF EXISTS clothing_embeddings_batch;
