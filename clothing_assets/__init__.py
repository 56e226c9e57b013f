"""Garment-photo classification as Dagster assets: stages, catalogs, a model and Dask scoring."""
