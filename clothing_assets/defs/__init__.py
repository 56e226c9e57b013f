"""The code location's definitions, as `dg` lays them out and `dg.load_from_defs_folder` loads
them: assets/ (one module per asset group), checks, jobs, automation and sensors, resources.
clothing_assets/definitions.py loads the folder and gives each asset its attributes for the
active deployment."""
