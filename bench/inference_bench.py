"""Scoring throughput on a local Dask cluster: our path with 1 and 2 workers, and in the same
run a seed-style path (one delayed task per image reading and preprocessing it with PIL,
batches of 80, the network rebuilt and its weights reloaded for every batch, fp32).

    python -m bench.inference_bench --images 341 --arch resnet50 --image-size 250
    python -m bench.inference_bench --cpu-kind AVX2 --images 341 --arch resnet50 --image-size 250

The images are the test stage of --data repeated to --images. The model has random weights:
throughput does not depend on what it learned. The last line reads `inference_bench: ours-1w A
img/s, ours-2w B img/s, seed-style C img/s, ratio R, scaling S` with R = B/C and S = B/(2A)
(--workers 2, the default). Peak worker memory (max RSS) is printed per path; --memory-check N
repeats our widest path on N images to show it stays flat.

--runtime picks our path's scoring runtime as CLOTHING_SCORING_RUNTIME does (`auto`, the default:
the runtime `runtime_choice.choose_runtime` measures fastest on this CPU among torch and, when the
`int8` extra is installed and its answers agree, ONNX Runtime int8, with the threads one worker
task scores with; `torch`; `onnxruntime-int8`). The int8 model is made once on the client, before
any clock starts,
calibrated on --calibration images of the train stage, and shipped once per worker. Every line
names the runtime and the CPU kind (flags capped by --cpu-kind, ONEDNN_MAX_CPU_ISA or
ATEN_CPU_CAPABILITY).

With --device cuda (the default when torch sees a GPU) our workers advertise the Dask resource
`GPU`, decode JPEGs with nvJPEG and score on the GPU, as `clothing_predictions` does on GPU
workers; use a larger --batch-size there (256). The seed-style path stays as the seed wrote it.
"""

import argparse
import functools
import io
import itertools
import tempfile
from pathlib import Path

import dask
import torch
import torchvision
from distributed import Client, LocalCluster, wait

from bench.common import jpegs, parse, parser, tagged, timed
from clothing_assets.ml.cpu import cpu_kind
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.runtime import (
    ORT_INT8,
    RUNTIMES,
    int8_model_bytes,
    int8_payload,
    resolve_runtime,
)
from clothing_assets.ml.runtime_choice import choose_runtime
from clothing_assets.ml.scoring import score_batch, warm_model
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.model_store import file_version


def calibration_blobs(stage: Path, count: int) -> list[bytes]:
    """`count` training images, evenly spread over the sorted stage (every class)."""
    files = jpegs(stage)
    return [f.read_bytes() for f in files[:: max(1, len(files) // count)][:count]]


def model_bytes(arch: str, image_size: int, classes: list[str]) -> bytes:
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(classes))
    # one view per image, as the seed-style path scores: the same work per image on both
    # paths (eval_flip, the default, doubles the forward passes of ours)
    settings = TrainSettings(architecture=arch, image_size=image_size, eval_flip=False)
    return ModelFile.of_training(model.state_dict(), classes, settings).to_bytes()


def peak_rss_mib(client: Client) -> dict[str, float]:
    """Each worker's own peak resident size (VmHWM; ru_maxrss would report the peak of the
    process that spawned it, as it carries through exec)."""
    usage = client.run(_vm_hwm_kib)
    return {w: round(kib / 1024, 1) for w, kib in usage.items()}


def _vm_hwm_kib() -> int:
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])


def cluster(workers: int, gpu: bool = False) -> LocalCluster:
    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="6GiB",
        **({"resources": {"GPU": 1}} if gpu else {}),
    )  # fmt: skip


def warm_up(client: Client) -> None:
    """Import torch and torchvision on every worker before any clock starts."""
    client.run(lambda: __import__("torchvision.models") and None)


def ours(
    client: Client, data: bytes, paths: list[str], batch_size: int, gpu: bool, runtime: str
) -> float:
    """Our path: model bytes broadcast once and loaded on every worker before the clock
    starts, then batches of paths, read and decoded on the workers. `data` is the torch model
    file, or its `int8_model_bytes` with `runtime` onnxruntime-int8."""
    version = file_version(data)
    model = client.scatter(data, broadcast=True)
    rows = [{"RELATIVE_PATH": p, "URL": p, "SIZE": 0, "LAST_MODIFIED": None} for p in paths]
    wait([client.submit(warm_model, model, version, gpu=gpu, runtime=runtime, workers=[w],
                        pure=False)
          for w in client.scheduler_info()["workers"]])  # fmt: skip
    resources = {"GPU": 1} if gpu else None

    def run() -> list[dict]:
        futures = [
            client.submit(
                score_batch,
                model,
                version,
                rows[i : i + batch_size],
                gpu=gpu,
                runtime=runtime,
                pure=False,
                resources=resources,
            )  # fmt: skip
            for i in range(0, len(rows), batch_size)
        ]
        return list(itertools.chain.from_iterable(client.gather(futures)))

    results, elapsed = timed(run)
    assert len(results) == len(paths) and not any(r["ERROR"] for r in results)
    devices = {r["DEVICE"] for r in results}
    assert devices == {"cuda" if gpu else "cpu"}, devices
    return len(paths) / elapsed


# --- the seed-style path, as the original workflow scores ----------------------------------


def seed_load_image(path: str, image_size: int) -> torch.Tensor:
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    return transform(Image.open(path).convert("RGB"))


def seed_predict_batch(data: bytes, images: list[torch.Tensor], arch: str) -> list[tuple]:
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(payload["classes"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack(images)), dim=1)
    return [(int(p.argmax()), float(p.max())) for p in probs]


def seed_style(client: Client, data: bytes, paths: list[str], arch: str, size: int) -> float:
    torch_threads = client.run(lambda: __import__("torch").set_num_threads(1))
    del torch_threads

    def run() -> list[tuple]:
        images = [dask.delayed(seed_load_image)(p, size) for p in paths]
        batches = [
            dask.delayed(seed_predict_batch)(data, images[i : i + 80], arch)
            for i in range(0, len(images), 80)
        ]
        return list(itertools.chain.from_iterable(dask.compute(*batches, scheduler=client)))

    results, elapsed = timed(run)
    assert len(results) == len(paths)
    return len(paths) / elapsed


def arguments() -> argparse.Namespace:
    described = parser(__doc__)
    described.add_argument("--images", type=int, default=341, help="test-stage images scored")
    described.add_argument("--arch", default="resnet50")
    described.add_argument("--image-size", type=int, default=250)
    described.add_argument("--batch-size", type=int, default=16)
    described.add_argument(
        "--workers", type=int, default=2,
        help="the widest cluster: ours runs on 1 and on this many workers, seed-style on this many",
    )  # fmt: skip
    described.add_argument(
        "--memory-check", type=int, default=0, help="also ours, widest, on N images"
    )
    described.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    described.add_argument("--runtime", choices=RUNTIMES, default="auto", help="our path's runtime")
    described.add_argument(
        "--calibration", type=int, default=100, help="int8 calibration images (train stage)"
    )
    return parse(described)


@functools.cache
def _int8_bytes(train: Path, calibration: int, data: bytes) -> bytes:
    """The int8 model of `data`, made once however many times it is asked for."""
    out, seconds = timed(lambda: int8_model_bytes(data, calibration_blobs(train, calibration)))
    stem = int8_payload(out)
    print(f"{ORT_INT8} model made on the client in {seconds:.1f}s "
          f"({len(out) / 2**20:.0f} MiB, {calibration} calibration images; stem "
          f"{stem['stem']}: distance {stem['distance_int8_stem']:.4f} int8 against "
          f"{stem['distance_fp32_stem']:.4f} fp32)")  # fmt: skip
    return out


def chosen_runtime(args: argparse.Namespace, data: bytes, gpu: bool) -> str:
    """The runtime our path scores with: `--runtime`, or for `auto` on a CPU the one
    `choose_runtime` measures fastest here (one torch thread per task, as each worker runs)."""
    if args.runtime != "auto" or gpu:
        return resolve_runtime(args.runtime, gpu=gpu)
    train = args.data / "train"
    with tempfile.TemporaryDirectory() as cache:
        choice = choose_runtime(
            data, file_version(data), lambda: _int8_bytes(train, args.calibration, data),
            lambda: calibration_blobs(train, 32), Path(cache), threads=1,
        )  # fmt: skip
    print(choice.describe(), flush=True)
    return choice.runtime


def scoring_model(args: argparse.Namespace, data: bytes, runtime: str) -> bytes:
    """The bytes our workers load: the torch model file, or its int8 model made here once."""
    if runtime != ORT_INT8:
        return data
    return _int8_bytes(args.data / "train", args.calibration, data)


def main() -> None:
    args = arguments()
    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    kind = cpu_kind()

    stage = args.data / "test"
    files = [str(p) for p in jpegs(stage)]
    paths = list(itertools.islice(itertools.cycle(files), args.images))
    classes = sorted({Path(f).parent.name for f in files})
    data = model_bytes(args.arch, args.image_size, classes)
    runtime = chosen_runtime(args, data, gpu)
    print(f"{args.images} images from {stage}, {args.arch} at {args.image_size}px, "
          f"model {len(data) / 2**20:.0f} MiB, ours on {'cuda' if gpu else 'cpu'} with "
          f"{runtime}, batch {args.batch_size}, CPU {kind}")  # fmt: skip
    ours_data = scoring_model(args, data, runtime)

    rates, most = {}, args.workers
    for workers in sorted({1, most}):
        with cluster(workers, gpu) as c, Client(c) as client:
            warm_up(client)
            rates[f"ours-{workers}w"] = ours(
                client, ours_data, paths, args.batch_size, gpu, runtime
            )
            print(f"ours-{workers}w [{runtime}, {kind}]: {rates[f'ours-{workers}w']:.1f} img/s, "
                  f"peak worker RSS MiB {peak_rss_mib(client)}", flush=True)  # fmt: skip
    with cluster(most) as c, Client(c) as client:
        warm_up(client)
        rates["seed"] = seed_style(client, data, paths, args.arch, args.image_size)
        print(f"seed-style-{most}w [torch fp32, {kind}]: {rates['seed']:.1f} img/s, "
              f"peak worker RSS MiB {peak_rss_mib(client)}", flush=True)  # fmt: skip
    if args.memory_check:
        big = list(itertools.islice(itertools.cycle(files), args.memory_check))
        with cluster(most, gpu) as c, Client(c) as client:
            warm_up(client)
            rate = ours(client, ours_data, big, args.batch_size, gpu, runtime)
            print(f"ours-{most}w on {len(big)} images [{runtime}, {kind}]: {rate:.1f} img/s, "
                  f"peak worker RSS MiB {peak_rss_mib(client)}", flush=True)  # fmt: skip

    widest = rates[f"ours-{most}w"]
    ratio, scaling = widest / rates["seed"], widest / (most * rates["ours-1w"])
    ours_rates = ", ".join(f"{name} {rate:.1f} img/s" for name, rate in rates.items()
                           if name != "seed")  # fmt: skip
    print(tagged(
        f"inference_bench: {ours_rates}, seed-style {rates['seed']:.1f} img/s, ratio "
        f"{ratio:.2f}, scaling {scaling:.2f}, runtime {runtime}, CPU {kind}"
    ))  # fmt: skip


if __name__ == "__main__":
    main()
