"""The model server: FastAPI on uvicorn, dynamic batching, models from a `ModelSource`."""
