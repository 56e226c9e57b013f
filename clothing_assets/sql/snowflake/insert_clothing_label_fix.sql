INSERT INTO clothing_label_fixes (
    RELATIVE_PATH, DECISION, LABEL, PREVIOUS_LABEL, DECIDED_AT, DECIDED_BY
) VALUES (
    %(relative_path)s, %(decision)s, %(label)s, %(previous_label)s, %(decided_at)s,
    %(decided_by)s
);
