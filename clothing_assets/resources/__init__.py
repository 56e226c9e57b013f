"""Resources, one per file: the warehouse interface and its backends, stages, models, Dask."""
