-- result_batch: the frame of issues registered on the connection.
INSERT INTO clothing_label_issues (RELATIVE_PATH, GIVEN, SUGGESTED, SCORE, RANK)
SELECT RELATIVE_PATH, GIVEN, SUGGESTED, SCORE, RANK FROM result_batch;
