"""Model server throughput and latency: the real server process, concurrent HTTP clients.

    python -m bench.serve_bench [--data DIR] [--requests N] [--rounds 3] [--only resnet18]
                                [--clients 1 4 16]

For the model the server serves by default (EfficientNet-Lite0 at the default image size, from
its installed ImageNet weights, scored as trained by default: each image with its mirror image),
resnet18 at 128 px and resnet50 at 224 px (untrained, one view per image: speed does not depend
on the weights), with dynamic batching on (--max-batch-size 16) and off (1), posts the test
stage's JPEGs from 1, 4 and 16 (--clients) concurrent clients (each a keep-alive connection
posting one image after another) and prints throughput and p50/p95/p99 latency, plus the
in-process decode + forward time of one image for comparison and the in-process forward time
per image at batch 1 and 16 (the ceiling of what batching can gain on this CPU). The two
servers run side by side and each measurement alternates between them in --rounds rounds, the
in-process time taken between the rounds of the fewest clients and the forward-alone figures
between those of the most: a neighbour's load on a shared machine then weighs on both sides of
each ratio, and the batching gain printed is the median of the rounds' ratios.
Every line names the CPU kind.
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
from clothing_assets.ml.threads import use_threads_here
from clothing_assets.serve.app import ServeConfig
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


class InProcess:
    """Decode + forward of one image in this process, on a thread set up as the server's
    forward thread (`forward_thread`)."""

    def __init__(self, data: bytes, jpegs: list[bytes], pool: ThreadPoolExecutor) -> None:
        self.loaded, self.jpegs, self.done = LoadedModel.from_bytes("bench", data), jpegs, 0
        self.pool = pool
        self.samples(3)  # the first passes warm the allocator and oneDNN's kernels

    def samples(self, n: int) -> list[float]:
        """The ms of each of `n` images, one after another."""

        def one(blob: bytes) -> float:
            return timed(lambda: self.loaded.probabilities([self.loaded.decode(blob)]))[1] * 1000

        def run() -> list[float]:
            times = [one(self.jpegs[(self.done + i) % len(self.jpegs)]) for i in range(n)]
            self.done += n
            return times

        return self.pool.submit(run).result()


def forward_thread() -> ThreadPoolExecutor:
    """A thread that runs torch as the server's forward thread does: with the server's threads
    (`ServeConfig.threads`), in a process whose other threads run one (`main` sets it)."""
    return ThreadPoolExecutor(
        1, initializer=use_threads_here, initargs=(ServeConfig.from_settings().threads(),)
    )


class Ceiling:
    """The forward pass alone (images decoded beforehand), per image at batch 1 and at the
    server's largest batch (16), on one worker thread as the server runs it: the most batching
    can gain is the first over the second. Sampled between the rounds, as the servers are, since
    a neighbour's load on a shared machine moves the batch-16 figure by a third from one minute
    to the next."""

    def __init__(self, loaded: LoadedModel, jpegs: list[bytes], pool: ThreadPoolExecutor) -> None:
        self.loaded, self.pool = loaded, pool
        self.images = [self.loaded.decode(jpegs[i % len(jpegs)]) for i in range(16)]
        self.ms: dict[int, list[float]] = {1: [], 16: []}
        self.sample(warm=True)

    def sample(self, *, warm: bool = False) -> None:
        """One more median ms per image at each batch size (`warm`: discarded)."""
        for batch, repeats in ((1, 16), (16, 2)):
            ms = self.pool.submit(self._median_ms, batch, repeats).result()
            if not warm:
                self.ms[batch].append(ms)

    def _median_ms(self, batch: int, repeats: int) -> float:
        images, times = self.images[:batch], []
        for i in range(repeats + 1):
            _, seconds = timed(lambda: self.loaded.probabilities(images))
            if i >= 1:
                times.append(seconds * 1000 / batch)
        return statistics.median(times)

    def figures(self) -> tuple[float, float]:
        """Median ms per image at batch 1 and at batch 16 over the samples."""
        return statistics.median(self.ms[1]), statistics.median(self.ms[16])


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
    """Every line of one model; returns (throughput, p50, each round's throughput) by
    (batching, clients) and the in-process time. Both servers run at once (the idle one
    waits): each measurement alternates between them in rounds, and the in-process time is
    taken between the fewest clients' rounds, so that a neighbour's load on the shared machine
    weighs on both sides of each ratio."""
    root = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    data = model_file(arch, size)
    (root / "models").mkdir()
    (root / "models" / "model_trained.pt").write_bytes(data)
    requests = args.requests if arch != "resnet50" else max(16, args.requests // 3)
    pool = forward_thread()  # one: a second thread's OpenMP team would slow both (`ml.threads`)
    local = InProcess(data, jpegs, pool)
    ceiling = Ceiling(local.loaded, jpegs, pool)  # the same loaded model
    ports: dict[int, int] = {}
    servers = []
    try:
        for batch in (16, 1):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports[batch] = s.getsockname()[1]
            log = root / f"server-{batch}.log"
            servers.append(start_server(root / "models", ports[batch], batch, log))
            drive(ports[batch], jpegs, 4, 8)  # warm-up
        out: dict = {}
        for clients in args.clients:
            measure(arch, size, jpegs, clients, max(requests, 2 * clients), ports, local, out, args,
                    ceiling)  # fmt: skip
        one, sixteen = ceiling.figures()
        out["ceiling"] = one / sixteen
        print(tagged(
            f"{arch} {size} px | in-process forward per image, median of {len(ceiling.ms[1])} "
            f"samples between rounds: batch 1 {one:.1f} ms, batch 16 {sixteen:.1f} ms: batching "
            f"can gain at most {one / sixteen:.2f}x here"
        ), flush=True)  # fmt: skip
    finally:
        pool.shutdown()  # the next model's thread must be the only team (`ml.threads`)
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    return out


def measure(
    arch: str, size: int, jpegs: list[bytes], clients: int, requests: int, ports: dict[int, int],
    local: InProcess, out: dict, args: argparse.Namespace, ceiling: Ceiling,
) -> None:  # fmt: skip
    """`requests` posts from `clients` clients to each server, in `args.rounds` alternating
    rounds, with a forward-alone sample (`ceiling`) after the most clients' rounds; prints a
    line per server (and the in-process time after the fewest clients')."""
    per_round = max(2 * clients, -(-requests // args.rounds))
    rates: dict[int, list[float]] = {batch: [] for batch in ports}
    latencies: dict[int, list[float]] = {batch: [] for batch in ports}
    in_process: list[float] = []
    for turn in range(args.rounds):
        for batch in sorted(ports, reverse=turn % 2 == 0):
            rate, lat = drive(ports[batch], jpegs, clients, per_round)
            rates[batch].append(rate)
            latencies[batch] += lat
        if clients == min(args.clients):
            in_process += local.samples(per_round)
        if clients == max(args.clients):
            ceiling.sample()
    for batch in sorted(ports, reverse=True):
        lat, rate = latencies[batch], len(rates[batch]) / sum(1 / r for r in rates[batch])
        out[(batch, clients)] = (rate, percentile(lat, 50), rates[batch])
        print(
            tagged(
                f"{arch} {size} px | batching {'on ' if batch > 1 else 'off'} | "
                f"{clients:>2} clients | {rate:6.1f} img/s | p50 "
                f"{percentile(lat, 50):7.1f} ms | p95 {percentile(lat, 95):7.1f} ms | p99 "
                f"{percentile(lat, 99):7.1f} ms | n={len(lat)}"
            ),
            flush=True,
        )
    if in_process:
        out["in_process_ms"] = statistics.median(in_process)
        print(tagged(
            f"{arch} {size} px | in-process decode + forward of one image: "
            f"{out['in_process_ms']:.1f} ms"
        ), flush=True)  # fmt: skip


def main() -> None:
    described = parser(__doc__)
    described.add_argument(
        "--requests", type=int, default=96, help="per measurement (a third of it for resnet50)"
    )
    described.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per measurement (default 3)"
    )
    described.add_argument("--only", default=None, help="one architecture, e.g. resnet18")
    described.add_argument(
        "--clients", type=int, nargs="+", default=list(CLIENTS), help="concurrent clients"
    )
    args = parse(described)
    torch.set_num_threads(1)  # as the server runs every thread but its forward thread
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
        # the median of the rounds' ratios: a neighbour's burst during one round sways one ratio
        speedup = statistics.median(
            on / off for on, off in zip(out[(16, most)][2], out[(1, most)][2], strict=True)
        )
        lone = out[(16, fewest)][1] / out["in_process_ms"]
        print(
            tagged(
                f"{arch} {size} px | {most} clients: batching {speedup:.2f}x one-at-a-time"
                f" (the forward pass's own ceiling {out['ceiling']:.2f}x)"
                f" | {fewest} client(s) p50 = {lone:.2f}x in-process decode + forward"
            ),
            flush=True,
        )
    print(f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared)")


if __name__ == "__main__":
    main()
