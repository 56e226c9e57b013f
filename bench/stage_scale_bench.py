"""How change detection scales with the stage (BENCHMARKS.md, Stage scale): a stage sensor
tick, a stage + catalog sync with nothing changed, a sync-and-score run after +1 % files
against its scoring step, and the peak memory of the run and its Dask workers, on a local
stage of `--files` hard links of the images (and a sensor tick and no-change sync on an
S3 stage of `--s3-files` objects on moto's server).

    python -m bench.stage_scale_bench --files 10000 100000 --s3-files 10000
    python -m bench.stage_scale_bench --files 1000 --s3-files 200      # a quick check

Runs go through the CLI as a user runs them (`python -m dagster asset materialize ...`,
`dagster sensor preview ...`), each size in a fresh temp folder with a fresh DAGSTER_HOME; the
sensor tick is also timed in-process, as the daemon evaluates it. The images are --data's
train stage, which is also the train stage of every run. Before the +1 % run every
existing row is marked as scored by the champion (written directly; setup, not measured), so
that the run scores exactly the new files. The champion is an untrained resnet18 at 64 px
registered through the warehouse (scoring cost, not accuracy, is measured). Memory is the
peak resident set sampled every 0.2 s from /proc: the run (the CLI process and its step
processes) and the sum over the Dask worker processes. Prints every figure with the CPU kind
and the date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.common import DEFAULT_DATA, REPO, jpegs, parse, parser, timed
from clothing_assets.ml.cpu import cpu_kind

# the images linked and uploaded, and the runs' train stage: --data's train stage
SHARED = DEFAULT_DATA / "train"
TEST_ASSETS = "clothing_dataset,clothing_test"
SCORE_ASSETS = "clothing_dataset,clothing_test,clothing_predictions"


def source_images() -> list[Path]:
    """The train stage's images, linked and uploaded in turn as many times as a size needs."""
    return jpegs(SHARED)


def link_files(root: Path, count: int, *, start: int = 0, prefix: str = "f") -> None:
    """`count` hard links of the train-stage images as `<class>/<prefix><i>.jpg` (no bytes
    copied)."""
    images = source_images()
    for i in range(start, start + count):
        source = images[i % len(images)]
        target = root / source.parent.name / f"{prefix}{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)


class PeakMemory:
    """Samples the resident memory of a process tree until stopped: the peak of the run (the
    CLI process, where every step runs) and of the Dask workers (summed): the processes under
    it that multiprocessing's spawn started."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.run_peak = self.workers_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def _children() -> dict[int, list[int]]:
        tree: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(parent, []).append(int(entry))
        return tree

    @staticmethod
    def _rss_and_spawned(pid: int) -> tuple[int, bool]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return 0, False
        rss = next((int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("VmRSS:")), 0)  # fmt: skip
        return rss * 1024, b"spawn_main" in cmdline

    def _sample(self) -> None:
        while not self._stop.is_set():
            tree, todo, run, workers = self._children(), [self.pid], 0, 0
            while todo:
                pid = todo.pop()
                rss, spawned = self._rss_and_spawned(pid)
                if spawned:
                    workers += rss
                else:
                    run += rss
                todo.extend(tree.get(pid, []))
            self.run_peak = max(self.run_peak, run)
            self.workers_peak = max(self.workers_peak, workers)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cli(args: list[str], env: dict[str, str]) -> tuple[float, PeakMemory, str]:
    """Run `python -m dagster <args>`: (wall seconds, its memory, its output); exits on failure."""

    def run() -> tuple[subprocess.Popen, PeakMemory, str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", *args], cwd=env["BENCH_WORKDIR"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        memory = PeakMemory(process.pid)
        return process, memory, process.communicate()[0]

    (process, memory, output), seconds = timed(run)
    memory.stop()
    if process.returncode != 0:
        sys.exit(f"dagster {' '.join(args)} failed ({process.returncode}):\n{output[-4000:]}")
    return seconds, memory, output


def materialize(selection: str, env: dict[str, str]) -> tuple[float, PeakMemory, str]:
    return cli(["asset", "materialize", "-m", "clothing_assets.definitions",
                "--select", selection], env)  # fmt: skip


def environment(workdir: Path, test_stage: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOTHING_", "SNOWFLAKE_"))}
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        BENCH_WORKDIR=str(workdir),
        DAGSTER_HOME=str(home),
        PYTHONPATH=str(REPO),
        CLOTHING_WAREHOUSE="local",
        CLOTHING_TEST_STAGE_URL=test_stage,
        CLOTHING_TRAIN_STAGE_URL=str(SHARED),
        CLOTHING_DUCKDB_PATH=str(workdir / "clothing.duckdb"),
        CLOTHING_MODELS_DIR=str(workdir / "models"),
        CLOTHING_CACHE_DIR=str(workdir / "cache"),
        CLOTHING_DASK_WORKERS="2",
    )
    return env


def in_environment(env: dict[str, str]):
    """Point this process's settings at `env` (the in-process sensor tick and the setup)."""
    for key in [k for k in os.environ if k.startswith("CLOTHING_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith(("CLOTHING_", "AWS_"))})


SAID = ("skip", "observ", "no stage changed")


def sensor_ticks(env: dict[str, str]) -> dict[str, float | str]:
    """In-process: a fresh tick of the stage observer (an empty instance: both stages listed
    and their versions recorded) and a steady tick (nothing changed: listed, compared with the
    recorded versions, nothing recorded); then `dagster sensor preview`, wall time including
    loading the code location."""
    import dagster as dg

    from clothing_assets.defs.sensors import OBSERVER, build_stage_observer
    from clothing_assets.environment import resources_for

    in_environment(env)
    sensor = build_stage_observer()
    resources = resources_for()
    figures: dict[str, float | str] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        for name in ("fresh", "steady"):
            with dg.build_sensor_context(
                instance=instance,
                resources={k: resources[k] for k in sensor.required_resource_keys},
            ) as context:  # fmt: skip
                result, figures[f"tick_{name}_s"] = timed(lambda context=context: sensor(context))
            for event in getattr(result, "asset_events", []):
                instance.report_runless_asset_event(event)
            figures[f"tick_{name}_result"] = getattr(result, "skip_message", None) or "observed"
    seconds, _, output = cli(["sensor", "preview", OBSERVER, "-m",
                              "clothing_assets.definitions"], env)  # fmt: skip
    figures["preview_cli_s"] = seconds
    said = [
        line for line in output.splitlines() if "skip" in line.lower() or "observ" in line.lower()
    ]
    figures["preview_said"] = said[-1][-160:] if said else ""
    return figures


def champion_and_scored_baseline(env: dict[str, str]) -> str:
    """Register an untrained resnet18 (64 px) as the champion and mark every clothing_test row
    as scored by it: setup for the +1 % run, written directly, not measured."""
    from datetime import UTC, datetime

    import pandas as pd
    import torch
    from dagster_duckdb import DuckDBResource

    from clothing_assets.ml.model_file import ModelFile
    from clothing_assets.ml.models import build_model
    from clothing_assets.ml.settings import TrainSettings
    from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
    from clothing_assets.resources.model_store import ModelStoreResource
    from clothing_assets.resources.warehouse import PREDICTION_COLUMNS, ModelRecord

    in_environment(env)
    classes = sorted(p.name for p in SHARED.iterdir() if p.is_dir())
    torch.manual_seed(0)
    data = ModelFile.of_training(build_model("resnet18", len(classes)).state_dict(), classes,
                                 TrainSettings(architecture="resnet18", image_size=64),
                                 val_accuracy=0.5).to_bytes()  # fmt: skip
    store = ModelStoreResource(directory=env["CLOTHING_MODELS_DIR"],
                               cache_directory=env["CLOTHING_CACHE_DIR"])  # fmt: skip
    version = store.put(data)
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=env["CLOTHING_DUCKDB_PATH"]))
    warehouse.register_model(ModelRecord(
        version=version, sha256=hashlib.sha256(data).hexdigest(), uri=store.uri(version),
        created_at=datetime.now(UTC), architecture="resnet18", image_size=64, classes=classes,
        val_accuracy=0.5, val_rows=1, train_rows=1, catalog_fingerprint="bench",
    ))  # fmt: skip
    warehouse.change_model_status(version, "champion", "stage_scale_bench")
    rows = warehouse.unscored_rows(version)
    scored = rows.assign(TYPE=classes[0], CONFIDENCE=0.5, PRED_TIMESTAMP=pd.Timestamp.now("UTC"),
                         MODEL_VERSION=version, ERROR=None)  # fmt: skip
    warehouse.write_predictions(scored[PREDICTION_COLUMNS])
    return version


def step_seconds(env: dict[str, str]) -> dict[str, float]:
    """Each step's duration in the last run (asset checks included), from the event log."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(limit=1)
        stats = instance.get_run_step_stats(run.run_id)
    return {s.step_key: round(s.end_time - s.start_time, 2) for s in stats if s.end_time}


def local_stage(files: int, workdir: Path, *, score: bool = True) -> dict[str, float | str]:
    """Every figure of one local stage size (without the sync-and-score run unless `score`)."""
    stage = workdir / "stage"
    figures: dict[str, float | str] = {"link_s": timed(lambda: link_files(stage, files))[1]}
    env = environment(workdir, str(stage))
    figures["first_sync_s"] = materialize(TEST_ASSETS, env)[0]
    seconds, memory, _ = materialize(TEST_ASSETS, env)
    figures.update(nochange_sync_s=seconds, nochange_run_peak_mb=memory.run_peak / 2**20,
                   nochange_steps_s=step_seconds(env))  # fmt: skip
    figures.update(sensor_ticks(env))
    if score:
        figures.update(score_run(stage, files, env))
    return figures


def score_run(stage: Path, files: int, env: dict[str, str]) -> dict[str, float | str]:
    """The figures of a sync-and-score run after +1 % files, the rows before them scored."""
    champion_and_scored_baseline(env)
    added = max(1, files // 100)
    link_files(stage, added, start=files, prefix="new")
    seconds, memory, output = materialize(SCORE_ASSETS, env)
    if "RUN_SUCCESS" not in output:
        sys.exit(f"the sync-and-score run did not succeed:\n{output[-4000:]}")
    return dict(
        added=added, score_run_s=seconds, score_steps_s=step_seconds(env),
        scoring_step_s=step_seconds(env)["clothing_predictions"],
        score_run_peak_mb=memory.run_peak / 2**20,
        score_workers_peak_mb=memory.workers_peak / 2**20,
    )  # fmt: skip


def s3_stage(objects: int, workdir: Path) -> dict[str, float | str]:
    """A sensor tick and a no-change sync on an S3 stage of `objects` objects on moto."""
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        os.environ.update(aws)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bench-stage")
        images = source_images()

        def upload() -> None:
            for start in range(0, objects, 500):
                fs.pipe({f"bench-stage/stage/{images[i % len(images)].parent.name}/f{i}.jpg":
                         images[i % len(images)].read_bytes()
                         for i in range(start, min(objects, start + 500))})  # fmt: skip

        figures: dict[str, float | str] = {"upload_s": timed(upload)[1]}
        env = {**environment(workdir, "s3://bench-stage/stage"), **aws}
        figures["first_sync_s"] = materialize(TEST_ASSETS, env)[0]
        figures["nochange_sync_s"] = materialize(TEST_ASSETS, env)[0]
        figures.update(sensor_ticks(env))
        return figures
    finally:
        server.stop()


def main() -> None:
    global SHARED
    described = parser(__doc__)
    described.add_argument("--files", type=int, nargs="+", default=[10_000, 100_000])
    described.add_argument("--s3-files", type=int, default=10_000, help="0: no S3 stage")
    described.add_argument("--keep", action="store_true", help="keep the temp folders")
    described.add_argument(
        "--no-score", action="store_true", help="leave out the +1 %% sync-and-score run"
    )
    args = parse(described)
    SHARED = args.data / "train"
    header = {"cpu": cpu_kind(), "cores": os.cpu_count(), "date": dt.date.today().isoformat(),
              "load_avg_1m": os.getloadavg()[0]}  # fmt: skip
    print(json.dumps(header), flush=True)
    results = {}
    for files in args.files:
        workdir = Path(tempfile.mkdtemp(prefix=f"stage-bench-{files}-"))
        try:
            results[files] = local_stage(files, workdir, score=not args.no_score)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps({"stage": "local", "files": files, **_rounded(results[files])}),
              flush=True)  # fmt: skip
    if len(args.files) > 1 and not args.no_score:
        small, large = results[min(args.files)], results[max(args.files)]
        print(json.dumps({
            "memory_ratio_run": round(large["score_run_peak_mb"] / small["score_run_peak_mb"], 2),
            "memory_ratio_workers": round(
                large["score_workers_peak_mb"] / small["score_workers_peak_mb"], 2),
        }), flush=True)  # fmt: skip
    if args.s3_files:
        workdir = Path(tempfile.mkdtemp(prefix="stage-bench-s3-"))
        try:
            figures = s3_stage(args.s3_files, workdir)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps({"stage": "s3 (moto)", "files": args.s3_files, **_rounded(figures)}),
              flush=True)  # fmt: skip
    print(json.dumps({**header, "load_avg_1m_end": os.getloadavg()[0]}), flush=True)


def _rounded(figures: dict) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}


if __name__ == "__main__":
    main()
