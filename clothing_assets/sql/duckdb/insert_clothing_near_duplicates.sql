-- result_batch: the frame of pairs registered on the connection.
INSERT INTO clothing_near_duplicates (PATH_A, STAGE_A, PATH_B, STAGE_B, SIMILARITY, KIND)
SELECT PATH_A, STAGE_A, PATH_B, STAGE_B, SIMILARITY, KIND FROM result_batch;
