DROP TABLE IF EXISTS clothing_catalog_errors;
