-- An external stage over the images. The storage integration holds the cloud access, so no
-- secret appears here. __STAGE__ and __STORAGE_INTEGRATION__ are replaced by names that passed
-- validate_identifier (a stage reference cannot be bound); the URL is a bound value.
CREATE STAGE IF NOT EXISTS __STAGE__
    URL = %(url)s
    STORAGE_INTEGRATION = __STORAGE_INTEGRATION__
    DIRECTORY = (ENABLE = TRUE);
