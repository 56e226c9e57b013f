DROP TABLE IF EXISTS clothing_predictions_batch;
