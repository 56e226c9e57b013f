-- Training images whose given label the out-of-fold predictions disagree with, RANK 1 the
-- most suspicious (SCORE: one minus the probability of the given label). Replaced whole by
-- label_issues.
CREATE TABLE IF NOT EXISTS clothing_label_issues (
    RELATIVE_PATH VARCHAR NOT NULL,
    GIVEN VARCHAR NOT NULL,
    SUGGESTED VARCHAR NOT NULL,
    SCORE DOUBLE NOT NULL,
    RANK INTEGER NOT NULL
);
