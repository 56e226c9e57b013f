"""Where trained weights, checkpoints and plots are written."""

import hashlib
from pathlib import Path

import dagster as dg
from pydantic import Field

MODEL_FILE = "model_trained.pt"
CHECKPOINT_FILE = "checkpoint.pt"


class ModelStoreResource(dg.ConfigurableResource):
    """A folder for `model_trained.pt`, `checkpoint.pt` and the training plots."""

    directory: str = Field(default="models", description="Folder; CLOTHING_MODELS_DIR sets it.")
    min_val_accuracy: float = Field(
        default=0.5,
        description="Quality gate: a model below this validation accuracy never scores "
        "(CLOTHING_MIN_VAL_ACCURACY).",
    )
    drift_threshold: float = Field(
        default=0.25,
        description="Predicted vs training class mix distance that raises a drift warning "
        "(CLOTHING_DRIFT_THRESHOLD).",
    )

    @property
    def root(self) -> Path:
        path = Path(self.directory).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.root / CHECKPOINT_FILE

    @property
    def plots_dir(self) -> Path:
        path = self.root / "plots"
        path.mkdir(parents=True, exist_ok=True)
        return path


def file_version(data: bytes) -> str:
    """The model version: the first 16 hex digits of the file's SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]
