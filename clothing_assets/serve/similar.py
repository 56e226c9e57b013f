"""Find similar: POST /similar answers the k cataloged images nearest to an uploaded one, and
GET /thumbnail serves a small JPEG of an image it answered.

The upload is embedded by the served model (`ml.embeddings.embed_batch`, the same decode and
eval preset as /predict) and searched among the stored embeddings of that same version, through
the warehouse (`Warehouse.nearest_embeddings`). A thumbnail is served only for a (stage, path)
that /similar answered (so a cataloged file), read through the stage reader and its checks
(`stage.read_file`: no path leaves the stage, size and time limits); anything else is a 404.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from PIL import Image

from clothing_assets.ml.embeddings import embed_batch
from clothing_assets.ml.images import ImageDecodeError, prepare

if TYPE_CHECKING:
    from clothing_assets.resources.warehouse import Warehouse
    from clothing_assets.serve.model import LoadedModel

MAX_K = 50
DEFAULT_K = 8
THUMBNAIL_SIDE = 160
SEARCH_LOCK_WAIT_S = 2.0
# (stage, path) pairs /similar answered, kept for their thumbnails; the oldest are forgotten
REMEMBERED_PATHS = 10_000


class SimilarCatalog(Protocol):
    """Where /similar searches and /thumbnail reads (the warehouse and the stages)."""

    def nearest(self, vector: np.ndarray, k: int, model_version: str) -> list[dict[str, Any]]:
        """The k nearest stored embeddings: dicts with path, stage, label and similarity."""
        ...

    def read(self, stage: str, path: str) -> bytes:
        """The bytes of a cataloged file of `stage` ('train' or 'test'), through the stage
        reader's checks; OSError or ValueError when it cannot be read."""
        ...


class WarehouseCatalog:
    """The warehouse's embeddings and the stages' files, as /similar and /thumbnail use them.
    The warehouse opens and closes its own connection per call."""

    def __init__(self, warehouse: Warehouse, stage_names: dict[str, str]) -> None:
        self.warehouse, self.stage_names = warehouse, dict(stage_names)

    def nearest(self, vector: np.ndarray, k: int, model_version: str) -> list[dict[str, Any]]:
        found = self.warehouse.nearest_embeddings(vector, k, model_version)
        return [
            {"path": r.RELATIVE_PATH, "stage": r.STAGE, "label": r.LABEL,
             "similarity": round(float(r.SIMILARITY), 6)}
            for r in found.itertuples()
        ]  # fmt: skip

    def read(self, stage: str, path: str) -> bytes:
        from clothing_assets.stage import read_file

        [url] = self.warehouse.file_urls(self.stage_names[stage], [path])
        return read_file(url)[0]  # None (a path that would leave the stage) is refused there


def environment_catalog() -> WarehouseCatalog:
    """The catalog of this environment: its warehouse, read-only (the server creates and
    changes nothing there; a warehouse never materialized is a clear 503), and its two stages'
    names. A DuckDB file that a run holds locked is waited for SEARCH_LOCK_WAIT_S at most: the
    search then answers from the embeddings it read last (`embedding_index`)."""
    from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE, registry_parts

    warehouse, _store = registry_parts(read_only=True)
    if hasattr(warehouse, "lock_timeout_s"):  # DuckDB
        warehouse = warehouse.model_copy(update={"lock_timeout_s": SEARCH_LOCK_WAIT_S})
    return WarehouseCatalog(warehouse, {"train": TRAIN_STAGE, "test": TEST_STAGE})


class NoEmbeddings(LookupError):
    """The warehouse holds no embedding of the served model version."""


class SimilarSearch:
    """Embeds uploads with the served model and asks the catalog (made at first use, default
    `environment_catalog`); remembers the answered paths for their thumbnails."""

    def __init__(self, catalog: SimilarCatalog | None = None) -> None:
        self._catalog = catalog
        self._answered: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def catalog(self) -> SimilarCatalog:
        if self._catalog is None:
            self._catalog = environment_catalog()
        return self._catalog

    def search(self, loaded: LoadedModel, data: bytes, k: int) -> list[dict[str, Any]]:
        """The k cataloged images nearest to the image in `data` (blocking: run in a thread);
        ImageDecodeError for an unusable image, NoEmbeddings when none of the version exist."""
        vector = embed_upload(loaded, data)
        found = self.catalog().nearest(vector, k, loaded.version)
        if not found:
            raise NoEmbeddings(
                f"no embeddings of model {loaded.version} in the warehouse yet: materialize "
                "image_embeddings (`dagster asset materialize -m clothing_assets.definitions "
                "--select image_embeddings`)"
            )
        with self._lock:
            for item in found:
                self._answered[(item["stage"], item["path"])] = None
                self._answered.move_to_end((item["stage"], item["path"]))
            while len(self._answered) > REMEMBERED_PATHS:
                self._answered.popitem(last=False)
        return found

    def thumbnail(self, stage: str, path: str) -> bytes | None:
        """A small JPEG of a file /similar answered; None for any other (stage, path) or a
        file that cannot be read or decoded now (blocking: run in a thread)."""
        with self._lock:
            if (stage, path) not in self._answered:
                return None
        try:
            data = self.catalog().read(stage, path)
            return thumbnail_jpeg(data)
        except (OSError, ValueError, ImageDecodeError):
            return None


def embed_upload(loaded: LoadedModel, data: bytes) -> np.ndarray:
    """The embedding of one uploaded image by the served model: decoded and prepared as for
    /predict (`LoadedModel.decode`, the model file's eval preset); ImageDecodeError if unusable."""
    image = prepare(data, loaded.model_file.cache_size)
    batch = loaded.model_file.eval_preset()(image[None].to(loaded.device))
    return embed_batch(loaded.model, batch)[0]


def thumbnail_jpeg(data: bytes, side: int = THUMBNAIL_SIDE) -> bytes:
    """`data` decoded as a model input is (size-checked, reduced while decoding) and saved as a
    JPEG no larger than side x side."""
    image: torch.Tensor = prepare(data, side)
    pixels = image.permute(1, 2, 0).contiguous().numpy()
    thumb = Image.fromarray(pixels)
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def parse_k(raw: str | None) -> int:
    """The `k` query parameter: an integer from 1 to MAX_K (DEFAULT_K when absent);
    ValueError with the message to answer otherwise."""
    if raw is None:
        return DEFAULT_K
    try:
        k = int(raw)
    except ValueError:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {raw!r}") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {k}")
    return k


async def run_blocking(function: Any, *args: Any) -> Any:
    """`function(*args)` in a thread: the event loop keeps serving meanwhile."""
    return await asyncio.to_thread(function, *args)
