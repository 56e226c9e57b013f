UPDATE clothing_train AS t SET ERROR = e.ERROR
FROM clothing_catalog_errors AS e
WHERE t.RELATIVE_PATH = e.RELATIVE_PATH;
