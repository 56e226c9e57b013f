-- Pairs of embedded images that are copies of each other: KIND 'exact' (equal content
-- hashes) or 'near' (cosine similarity of their embeddings at or above the calibrated
-- threshold). A cross-stage pair has its train image as A. Replaced whole by near_duplicates.
CREATE TABLE IF NOT EXISTS clothing_near_duplicates (
    PATH_A VARCHAR NOT NULL,
    STAGE_A VARCHAR NOT NULL,
    PATH_B VARCHAR NOT NULL,
    STAGE_B VARCHAR NOT NULL,
    SIMILARITY DOUBLE NOT NULL,
    KIND VARCHAR NOT NULL
);
