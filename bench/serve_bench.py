"""Model server throughput and latency: the real server process, concurrent HTTP clients.

    python -m bench.serve_bench [--data DIR] [--requests N] [--only resnet18] [--clients 1 4 16]

For the model the server serves by default (EfficientNet-Lite0 at the default image size, from
its installed ImageNet weights, scored as trained by default: each image with its mirror image),
resnet18 at 128 px and resnet50 at 224 px (untrained, one view per image: speed does not depend
on the weights), with dynamic batching on (--max-batch-size 16) and off (1), posts the test
stage's JPEGs from 1, 4 and 16 (--clients) concurrent clients (each a keep-alive connection
posting one image after another) and prints throughput and p50/p95/p99 latency, plus the
in-process decode + forward time of one image for comparison and the in-process forward time
per image at batch 1 and 16 (the ceiling of what batching can gain on this CPU). Every line
names the CPU kind.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bench.common import REPO, jpegs, parse, parser, tagged, timed
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.serve.model import LoadedModel

CLASSES = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt",
           "t-shirt"]  # fmt: skip
DEFAULT = TrainSettings()
MODELS = [(DEFAULT.architecture, DEFAULT.image_size), ("resnet18", 128), ("resnet50", 224)]
CLIENTS = (1, 4, 16)


def model_file(architecture: str, size: int) -> bytes:
    """The model file the server loads: the default model as the default training writes it,
    any other one untrained and scored in one view per image, as the recorded figures."""
    torch.manual_seed(0)
    if (architecture, size) == (DEFAULT.architecture, DEFAULT.image_size):
        settings, weights = DEFAULT, DEFAULT.weights
    else:
        settings = TrainSettings(architecture=architecture, image_size=size, eval_flip=False)
        weights = "none"
    model = build_model(architecture, len(CLASSES), weights=weights, image_size=size)
    return ModelFile.of_training(model.state_dict(), CLASSES, settings).to_bytes()


def in_process_ms(data: bytes, jpegs: list[bytes], repeats: int) -> float:
    """Median ms of decode + forward of one image in this process, on one worker thread as
    the server runs its forward passes (on a busy machine, OpenMP in the main thread spins
    against other processes and measures several times slower)."""
    loaded, n = LoadedModel.from_bytes("bench", data), len(jpegs)

    def run() -> float:
        times = []
        for i in range(repeats + 3):
            _, seconds = timed(lambda i=i: loaded.probabilities([loaded.decode(jpegs[i % n])]))
            if i >= 3:  # the first passes warm the allocator and oneDNN's kernels
                times.append(seconds * 1000)
        return statistics.median(times)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def forward_ms_per_image(data: bytes, jpegs: list[bytes], batch: int, repeats: int) -> float:
    """Median ms per image of the forward pass alone (images decoded beforehand) at `batch`
    images per pass, on one worker thread as the server runs it: the most batching can gain
    is this figure at batch 1 over it at the server's largest batch."""
    loaded = LoadedModel.from_bytes("bench", data)
    images = [loaded.decode(jpegs[i % len(jpegs)]) for i in range(batch)]

    def run() -> float:
        times = []
        for i in range(repeats + 2):
            _, seconds = timed(lambda: loaded.probabilities(images))
            if i >= 2:
                times.append(seconds * 1000 / batch)
        return statistics.median(times)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def start_server(models: Path, port: int, batch: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CLOTHING_SERVE_MODEL_FILE": str(models / "model_trained.pt"),
    }
    command = [sys.executable, "-m", "clothing_assets.serve", "--port", str(port),
               "--max-batch-size", str(batch)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def drive(port: int, jpegs: list[bytes], clients: int, requests: int) -> tuple[float, list[float]]:
    """`requests` posts from `clients` closed-loop clients; (images/s, latencies in ms)."""
    latencies: list[float] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            started = time.perf_counter()
            conn.request("POST", "/predict", jpegs[i % len(jpegs)], {"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return requests / (time.perf_counter() - started), latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_model(arch: str, size: int, jpegs: list[bytes], args: argparse.Namespace) -> dict:
    """Every line of one model; returns throughputs by (batching, clients)."""
    root = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    data = model_file(arch, size)
    (root / "models").mkdir()
    (root / "models" / "model_trained.pt").write_bytes(data)
    requests = args.requests if arch != "resnet50" else max(16, args.requests // 3)
    local = in_process_ms(data, jpegs, repeats=20)
    print(tagged(f"{arch} {size} px | in-process decode + forward of one image: {local:.1f} ms"))
    one, sixteen = (forward_ms_per_image(data, jpegs, b, repeats=max(4, 64 // b)) for b in (1, 16))
    print(tagged(
        f"{arch} {size} px | in-process forward per image: batch 1 {one:.1f} ms, "
        f"batch 16 {sixteen:.1f} ms: batching can gain at most {one / sixteen:.2f}x here"
    ))  # fmt: skip
    out = {"in_process_ms": local}
    for batch in (16, 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_server(root / "models", port, batch, root / f"server-{batch}.log")
        try:
            drive(port, jpegs, 4, 8)  # warm-up
            for clients in args.clients:
                rate, lat = drive(port, jpegs, clients, max(requests, 2 * clients))
                out[(batch, clients)] = (rate, percentile(lat, 50))
                print(
                    tagged(
                        f"{arch} {size} px | batching {'on ' if batch > 1 else 'off'} | "
                        f"{clients:>2} clients | {rate:6.1f} img/s | p50 "
                        f"{percentile(lat, 50):7.1f} ms | p95 {percentile(lat, 95):7.1f} ms | p99 "
                        f"{percentile(lat, 99):7.1f} ms | n={len(lat)}"
                    ),
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


def main() -> None:
    described = parser(__doc__)
    described.add_argument(
        "--requests", type=int, default=96, help="per measurement (a third of it for resnet50)"
    )
    described.add_argument("--only", default=None, help="one architecture, e.g. resnet18")
    described.add_argument(
        "--clients", type=int, nargs="+", default=list(CLIENTS), help="concurrent clients"
    )
    args = parse(described)
    stage = args.data / "test"
    blobs = [p.read_bytes() for p in jpegs(stage)]
    print(
        f"{len(blobs)} JPEGs from {stage}; {os.cpu_count()} cores; torch "
        f"{torch.__version__}; load average {os.getloadavg()[0]:.1f} at the start"
    )
    most, fewest = max(args.clients), min(args.clients)
    for arch, size in MODELS:
        if args.only and arch != args.only:
            continue
        out = bench_model(arch, size, blobs, args)
        speedup = out[(16, most)][0] / out[(1, most)][0]
        lone = out[(16, fewest)][1] / out["in_process_ms"]
        print(
            tagged(
                f"{arch} {size} px | {most} clients: batching {speedup:.2f}x one-at-a-time"
                f" | {fewest} client(s) p50 = {lone:.2f}x in-process decode + forward"
            ),
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared)")


if __name__ == "__main__":
    main()
