-- Re-read the stage's location into its directory table (run before every listing or sync).
ALTER STAGE __STAGE__ REFRESH;
