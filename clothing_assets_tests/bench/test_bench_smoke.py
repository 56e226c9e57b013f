"""Every bench in bench/ runs as `python -m bench.<name>` on a few generated images, with sizes,
epochs and flags that keep each run to about 10 s on 2 slow cores, and prints its result line
naming the CPU kind. Figures are not checked: only that each bench still runs end to end and
says what it measured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clothing_assets.ml.cpu import cpu_kind
from clothing_assets_tests.support import REPO_ROOT, make_stage
from clothing_assets_tests.support.models import tiny_model

pytestmark = [pytest.mark.bench, pytest.mark.slow]

NUMBER = r"[\d.]+"
# bench -> (arguments after --data, a line its output must hold, after the CPU kind's tag)
SMOKE = {
    "decode_bench": (
        ["--images", "4", "--repeats", "1"],
        rf"decode_bench: pillow {NUMBER} img/s, torchvision {NUMBER} img/s, ratio {NUMBER}$",
    ),
    "fp32_step": (
        ["--arch", "resnet18", "--image-size", "32", "--batch-sizes", "4", "--images", "4",
         "--repeats", "1"],
        rf"fp32_step: resnet18 32px, channels_last b4 {NUMBER} img/s, contiguous b4 {NUMBER}",
    ),
    "raw_compute": (
        ["--arch", "resnet18", "--image-size", "32", "--batch-size", "2", "--steps", "1",
         "--repeats", "1"],
        rf"raw_compute: resnet18 32px fp32 {NUMBER} img/s, bf16 {NUMBER} img/s, ratio {NUMBER}$",
    ),
    "step_parts": (
        ["--arch", "resnet18", "--image-size", "32", "--batch-size", "4", "--repeats", "1"],
        rf"augmentation \(4 images, \d+ -> 32 px\): {NUMBER} ms$",
    ),
    "train_bench": (
        ["--arch", "resnet18", "--image-size", "32", "--steps", "1", "--batch-size", "4",
         "--images", "18"],
        rf"train_bench: ours {NUMBER} img/s, seed-style {NUMBER} img/s, ratio {NUMBER}$",
    ),
    "runtime_accuracy": (
        ["--model", "{model}"],
        rf"runtime_accuracy: model.pt, 9 test images, resnet18 32px: torch fp32 {NUMBER} % .*"
        rf"onnxruntime-int8 {NUMBER} %",
    ),
    "recipe_bench": (
        ["--recipes", "scratch", "--splits", "1", "--minutes", "0", "--epochs", "1"],
        rf"recipe_bench: scratch/crop unseen {NUMBER}±{NUMBER} test {NUMBER}±{NUMBER}, ",
    ),
    "warm_start_bench": (
        ["--splits", "1", "--epochs", "1", "--warm-epochs", "1", "--variants", "lr0.0005"],
        rf"warm_start_bench: champion unseen {NUMBER}±{NUMBER} test {NUMBER}±{NUMBER} seconds "
        rf"\d+, imagenet .*, champion-init-lr0.0005 unseen {NUMBER}",
    ),
    "tta_bench": (
        ["--splits", "1", "--epochs", "1", "--fixres", "--models", "{tmp}"],
        rf"tta_bench: crop unseen {NUMBER}±{NUMBER} test {NUMBER}±{NUMBER}, ",
    ),
    "inference_bench": (
        ["--images", "6", "--arch", "resnet18", "--image-size", "32", "--batch-size", "4",
         "--runtime", "torch", "--device", "cpu", "--workers", "1"],
        rf"inference_bench: ours-1w {NUMBER} img/s, seed-style {NUMBER} img/s, ratio {NUMBER}, ",
    ),
    "serve_bench": (
        ["--only", "resnet18", "--requests", "2", "--clients", "1"],
        rf"resnet18 128 px \| 1 clients: batching {NUMBER}x one-at-a-time",
    ),
    "similar_bench": (
        ["--embeddings", "500", "--queries", "3", "--arch", "resnet18", "--image-size", "32"],
        rf"similar_bench: 500 embeddings x 512, resnet18 32px: /similar p50 {NUMBER} ms .*"
        rf"peak RSS {NUMBER} MiB$",
    ),
    "duplicates_bench": (
        ["--model", "{model}", "--copied", "0.2", "--mislabelled", "0.1", "--embeddings", "500"],
        rf"duplicates_bench: mislabels {NUMBER} % in the top 2x \(\d+ of \d+\), pass over 500 "
        rf"embeddings {NUMBER}s \(\d+ pairs\), peak RSS {NUMBER} MB$",
    ),
    "stage_scale_bench": (["--files", "10", "--s3-files", "0", "--no-score"], None),
}  # fmt: skip
# benches that make their own tensors: no --data
NO_DATA = {"fp32_step", "raw_compute", "step_parts"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A clothing-dataset folder of 3 classes: 6 train and 3 test images each, 40 px."""
    root = tmp_path_factory.mktemp("bench-data")
    make_stage(root / "train", 6)
    make_stage(root / "test", 3, seed=50)
    return root


def run_bench(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m bench.<name> <args>` from the repository's root, one OpenMP thread (the
    machine is shared: spinning threads would measure the neighbours)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_every_bench_has_a_smoke_run():
    benches = {p.stem for p in (REPO_ROOT / "bench").glob("*.py")} - {"__init__", "common"}
    assert benches == set(SMOKE)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", [n for n in SMOKE if n != "stage_scale_bench"])
def test_a_bench_runs_on_a_few_images_and_names_the_cpu_kind(name, data, tmp_path):
    if name == "runtime_accuracy":
        pytest.importorskip("onnxruntime", reason="the int8 runtime needs the `int8` extra")
    model = tmp_path / "model.pt"
    model.write_bytes(tiny_model()[0])
    args, expected = SMOKE[name]
    args = [a.format(model=model, tmp=tmp_path / "out") for a in args]
    done = run_bench(name, *([] if name in NO_DATA else ["--data", str(data)]), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    line = rf"^{re.escape(cpu_kind())} \| {expected}"
    assert re.search(line, done.stdout, re.MULTILINE), done.stdout[-3000:]


@pytest.mark.timeout(180)
def test_the_stage_scale_bench_syncs_a_small_stage_through_the_cli(data):
    args, _ = SMOKE["stage_scale_bench"]
    done = run_bench("stage_scale_bench", "--data", str(data), *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["cpu"] == cpu_kind()
    [local] = [line for line in lines if line.get("stage") == "local"]
    assert local["files"] == 10 and local["nochange_sync_s"] > 0
    assert local["tick_steady_result"].startswith("no stage changed")
    assert "score_run_s" not in local  # --no-score


@pytest.mark.timeout(120)
def test_cpu_kind_caps_the_libraries_torch_loads_and_every_line_names_the_capped_kind():
    if cpu_kind() in ("other", "AVX2"):
        pytest.skip(f"this CPU ({cpu_kind()}) runs no wider than AVX2 already")
    for caps in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        assert caps not in os.environ, f"{caps} is set for the test run"
    args, _ = SMOKE["raw_compute"]
    done = run_bench("raw_compute", "--cpu-kind", "AVX2", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ", ATen AVX2" in done.stdout.splitlines()[0]  # read by torch when it loaded
    results = [line for line in done.stdout.splitlines() if " | " in line]
    assert results and all(line.startswith("AVX2 | ") for line in results), done.stdout


@pytest.mark.timeout(60)
def test_a_folder_without_images_is_named_in_the_error(tmp_path):
    # the stage bench imports no torch before it looks for images: the quickest to fail
    done = run_bench("stage_scale_bench", "--data", str(tmp_path), "--files", "1")
    assert done.returncode != 0
    assert f"no .jpg files under {tmp_path / 'train'}" in done.stderr
