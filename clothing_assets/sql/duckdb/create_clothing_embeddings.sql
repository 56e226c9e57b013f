-- One embedding per file, stage and model version: the champion's L2-normalised penultimate
-- features (`ml.embeddings`). SIZE, LAST_MODIFIED and ETAG are the file's as it was read, so a
-- row of a since-changed file is known stale; CONTENT_SHA256 is the hash of the same bytes
-- (exact copies share it). A file that could not be embedded has an ERROR and no EMBEDDING.
-- PHASH and PHASH_CENTER are the perceptual hashes of the decode the EMBEDDING was made from,
-- of the whole image and of its central 90 % (`ml.phash`); a table made before they existed
-- gains them through add_embeddings_phash*.sql.
-- __DIMENSION__ is the champion's embedding length: the array is fixed-size so that
-- array_cosine_similarity runs on it directly.
CREATE TABLE IF NOT EXISTS clothing_embeddings (
    RELATIVE_PATH VARCHAR NOT NULL,
    STAGE VARCHAR NOT NULL,
    MODEL_VERSION VARCHAR NOT NULL,
    SIZE BIGINT NOT NULL,
    LAST_MODIFIED TIMESTAMPTZ,
    ETAG VARCHAR,
    CONTENT_SHA256 VARCHAR,
    EMBEDDING FLOAT[__DIMENSION__],
    ERROR VARCHAR,
    EMBEDDED_AT TIMESTAMPTZ NOT NULL,
    PHASH BIGINT,
    PHASH_CENTER BIGINT,
    PRIMARY KEY (STAGE, RELATIVE_PATH, MODEL_VERSION)
);
