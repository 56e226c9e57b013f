-- One embedding per file, stage and model version: the champion's L2-normalised penultimate
-- features. SIZE, LAST_MODIFIED and ETAG are the file's as it was read (a row of a since-changed
-- file is stale); CONTENT_SHA256 is the hash of the same bytes. A file that could not be
-- embedded has an ERROR and no EMBEDDING. __DIMENSION__ is the champion's embedding length.
-- PHASH and PHASH_CENTER are the perceptual hashes (signed 64-bit) of the decode the EMBEDDING
-- was made from, of the whole image and of its central 90 %; a table made before they existed
-- gains them through add_embeddings_phash*.sql.
CREATE TABLE IF NOT EXISTS clothing_embeddings (
    RELATIVE_PATH VARCHAR NOT NULL,
    STAGE VARCHAR NOT NULL,
    MODEL_VERSION VARCHAR NOT NULL,
    SIZE NUMBER(38, 0) NOT NULL,
    LAST_MODIFIED TIMESTAMP_TZ,
    ETAG VARCHAR,
    CONTENT_SHA256 VARCHAR,
    EMBEDDING VECTOR(FLOAT, __DIMENSION__),
    ERROR VARCHAR,
    EMBEDDED_AT TIMESTAMP_TZ NOT NULL,
    PHASH NUMBER(19, 0),
    PHASH_CENTER NUMBER(19, 0),
    PRIMARY KEY (STAGE, RELATIVE_PATH, MODEL_VERSION)
);
