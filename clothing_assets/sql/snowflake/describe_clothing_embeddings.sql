-- The columns of clothing_embeddings with their types (EMBEDDING's is VECTOR(FLOAT, n)).
DESCRIBE TABLE clothing_embeddings;
