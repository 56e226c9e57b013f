-- Every decision a person made on a training image's label, never updated or deleted:
-- DECISION 'fix' sets LABEL in place of PREVIOUS_LABEL; 'keep' confirms LABEL. The newest
-- decision of a path is the one training and the review queue follow.
CREATE TABLE IF NOT EXISTS clothing_label_fixes (
    RELATIVE_PATH VARCHAR NOT NULL,
    DECISION VARCHAR NOT NULL,
    LABEL VARCHAR NOT NULL,
    PREVIOUS_LABEL VARCHAR NOT NULL,
    DECIDED_AT TIMESTAMPTZ NOT NULL,
    DECIDED_BY VARCHAR
);
