INSERT INTO clothing_label_fixes (
    RELATIVE_PATH, DECISION, LABEL, PREVIOUS_LABEL, DECIDED_AT, DECIDED_BY
) VALUES ($relative_path, $decision, $label, $previous_label, $decided_at, $decided_by);
