-- The stage's URL; LIKE is a pattern, so the caller keeps only the row whose name is equal.
SHOW STAGES LIKE %(name)s IN SCHEMA;
