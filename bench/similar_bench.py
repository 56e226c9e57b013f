"""Find similar at scale: /similar's latency and the memory it takes over many embeddings.

    python -m bench.similar_bench [--data DIR] [--embeddings 100000] [--queries 50]

A DuckDB warehouse holds --embeddings embeddings of an untrained model's length
(EfficientNet-Lite0: 1,280 floats): the real embeddings of the --data test images, and synthetic
unit vectors for the rest (the search's cost depends on the count and the length, not on the
values). The model server (in this process, uvicorn on 127.0.0.1) answers POST /similar?k=8 for
the test images one after another; the bench prints the p50 and p95 of those requests, of the
warehouse search alone, the time of the first search (which reads the matrix), and this
process's peak resident memory (server, matrix and DuckDB together). Target on 2 cores:
/similar p50 at most 50 ms at 100,000 embeddings.
"""

from __future__ import annotations

import http.client
import resource
import socket
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import torch
import uvicorn
from dagster_duckdb import DuckDBResource

from bench.common import jpegs, parse, parser, tagged, timed
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.model_store import file_version
from clothing_assets.serve.app import ServeConfig, create_app
from clothing_assets.serve.model import LoadedModel
from clothing_assets.serve.similar import SimilarSearch, WarehouseCatalog, embed_upload
from clothing_assets.serve.source import FileModelSource

CLASSES = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt",
           "t-shirt"]  # fmt: skip
CHUNK = 20_000  # synthetic rows per insert


def model_bytes(architecture: str, size: int) -> bytes:
    torch.manual_seed(0)
    # the default model's settings but its side: with its mirrored view, as the server scores
    settings = TrainSettings(architecture=architecture, image_size=size)
    state = build_model(architecture, len(CLASSES), image_size=size).state_dict()
    return ModelFile.of_training(state, CLASSES, settings).to_bytes()


def fill(database: Path, version: str, real: dict[str, np.ndarray], total: int) -> None:
    """clothing_embeddings with the `real` embeddings and synthetic unit vectors up to
    `total` rows, written straight into the table (the bench has no catalog for them)."""
    dimension = len(next(iter(real.values())))
    DuckDBWarehouse(duckdb=DuckDBResource(database=str(database))).prepare_embeddings(dimension)
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    with duckdb.connect(str(database)) as conn:
        for start in range(0, total, CHUNK):
            n = min(CHUNK, total - start)
            vectors = rng.standard_normal((n, dimension), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            paths = [f"synthetic/{start + i:07d}.jpg" for i in range(n)]
            if start == 0:
                vectors[: len(real)] = np.stack(list(real.values()))
                paths[: len(real)] = list(real)
            batch = pd.DataFrame({"p": paths, "e": list(vectors)})
            conn.register("batch", batch)
            conn.execute(
                "INSERT INTO clothing_embeddings (RELATIVE_PATH, STAGE, MODEL_VERSION, SIZE, "
                "EMBEDDING, EMBEDDED_AT) "
                f"SELECT p, 'train', $v, 0, CAST(e AS FLOAT[{dimension}]), $t FROM batch",
                {"v": version, "t": now},
            )
            conn.unregister("batch")


def post(port: int, data: bytes) -> float:
    """Seconds of one POST /similar?k=8 on a fresh connection; its answer must be a 200."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/similar?k=8", data, {"Content-Type": "image/jpeg"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"/similar answered {response.status}: {body[:300]!r}")
    return time.perf_counter() - started


def serve(app) -> tuple[uvicorn.Server, int]:
    """`app` on a free loopback port in a thread, once it serves a model."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not serve the model within 120 s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main(argv: list[str] | None = None) -> None:
    described = parser(__doc__)
    described.add_argument("--embeddings", type=int, default=100_000, help="rows in the table")
    described.add_argument("--queries", type=int, default=50, help="POST /similar requests")
    described.add_argument("--arch", default="efficientnet_lite0", help="the model's network")
    described.add_argument(
        "--image-size", type=int, default=TrainSettings().image_size, help="the model's input side"
    )
    args = parse(described, argv)
    images = [p.read_bytes() for p in jpegs(args.data / "test", args.queries)]
    with tempfile.TemporaryDirectory(prefix="similar-bench-") as tmp:
        data = model_bytes(args.arch, args.image_size)
        (Path(tmp) / "model.pt").write_bytes(data)
        version = file_version(data)
        loaded = LoadedModel.from_bytes(version, data)
        real = {f"real/{i:04d}.jpg": embed_upload(loaded, b) for i, b in enumerate(images)}
        database = Path(tmp) / "bench.duckdb"
        _, fill_s = timed(lambda: fill(database, version, real, max(args.embeddings, len(real))))
        warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(database)))
        vectors = list(real.values())
        _, load_s = timed(lambda: warehouse.nearest_embeddings(vectors[0], 8, version))
        search = [timed(lambda v=v: warehouse.nearest_embeddings(v, 8, version))[1]
                  for v in vectors]  # fmt: skip
        app = create_app(
            FileModelSource(Path(tmp) / "model.pt"),
            ServeConfig(poll_seconds=1.0),
            SimilarSearch(WarehouseCatalog(warehouse, {"train": "bench", "test": "bench"})),
        )
        server, port = serve(app)
        post(port, images[0])  # the first request loads nothing more: the matrix is read
        latencies = [post(port, images[i % len(images)]) for i in range(args.queries)]
        server.should_exit = True
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(tagged(
        f"similar_bench: {max(args.embeddings, len(real))} embeddings x {len(vectors[0])}, "
        f"{args.arch} {args.image_size}px: /similar p50 {percentile(latencies, 50):.1f} ms "
        f"p95 {percentile(latencies, 95):.1f} ms ({len(latencies)} requests), search p50 "
        f"{statistics.median(search) * 1000:.1f} ms, first search {load_s:.2f} s, "
        f"fill {fill_s:.1f} s, peak RSS {peak_mib:.0f} MiB"
    ))  # fmt: skip


if __name__ == "__main__":
    main()
