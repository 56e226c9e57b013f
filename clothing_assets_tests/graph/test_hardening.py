"""Bad input and hostile stages, each on the real thing: a real filesystem with links and FIFOs,
a real HTTP server that truncates and trickles, real DuckDB and Dask."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import dask
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clothing_assets.ml.scoring import score_batch
from clothing_assets.ml.train import TrainSettings, build_model, model_payload
from clothing_assets.stage import ReadLimits, list_stage, read_bytes, stage_file_url
from clothing_assets.stage.reading import HTTP_ATTEMPTS
from clothing_assets_tests.support import (
    CLASSES,
    COLOURS,
    faults,
    materialize,
    metadata_of,
    read_table,
    register_model,
    write_image,
)
from clothing_assets_tests.support.presign_server import PresignServer, serve

# --- 1. fsspec URL chaining must not lead out of a local stage -----------------------------


@pytest.fixture
def chaining_stage(tmp_path) -> tuple[Path, Path, Path]:
    """A stage with a link `x` to a file outside, and a folder literally named `x::` whose
    file `x::/d/f.jpg` fsspec would read as `x` chained with `/d/f.jpg`."""
    stage, outside = tmp_path / "stage", tmp_path / "outside"
    private = write_image(outside / "private.jpg", COLOURS["shoes"], seed=2, size=48)
    literal = write_image(stage / "x::" / "d" / "f.jpg", COLOURS["hat"], seed=1)
    (stage / "x").symlink_to(private)
    return stage, literal, private


@pytest.mark.timeout(60)
def test_a_path_with_chaining_syntax_is_read_literally_inside_the_stage(chaining_stage):
    stage, literal, private = chaining_stage
    listing = list_stage(str(stage)).set_index("RELATIVE_PATH")
    assert listing.loc["x", "ERROR"] == "symbolic link leads outside the stage; not read"
    assert pd.isna(listing.loc["x::/d/f.jpg", "ERROR"])

    url = stage_file_url(str(stage), "x::/d/f.jpg")
    data = read_bytes(url)
    assert data == literal.read_bytes() and data != private.read_bytes()

    # a FIFO in place of the link: a reader that reinterpreted the path would block on it
    (stage / "x").unlink()
    os.mkfifo(stage / "x")
    assert read_bytes(stage_file_url(str(stage), "x::/d/f.jpg")) == literal.read_bytes()


@pytest.mark.timeout(60)
def test_a_file_swapped_for_a_link_or_fifo_after_the_check_is_refused_not_followed(tmp_path):
    stage, outside = tmp_path / "stage", tmp_path / "outside"
    write_image(stage / "hat" / "a.jpg", COLOURS["hat"], seed=1)
    write_image(outside / "private.jpg", COLOURS["shoes"], seed=2)
    url = stage_file_url(str(stage), "hat/a.jpg")  # checked now, read later
    (stage / "hat" / "a.jpg").unlink()
    (stage / "hat" / "a.jpg").symlink_to(outside / "private.jpg")
    with pytest.raises(OSError, match="refused"):
        read_bytes(url)
    (stage / "hat" / "a.jpg").unlink()
    os.mkfifo(stage / "hat" / "a.jpg")
    with pytest.raises(OSError, match="refused"):
        read_bytes(url)
    # a folder on the way swapped for a link out
    (stage / "hat").rename(stage / "hat-old")
    (stage / "hat").symlink_to(outside)
    (outside / "a.jpg").write_bytes(b"outside")
    with pytest.raises(OSError, match="refused"):
        read_bytes(url)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = write_image(tmp_path / "stage" / "hat" / "a.jpg", COLOURS["hat"], seed=1)
    url = stage_file_url(str(tmp_path / "stage"), "hat/a.jpg")
    limits = ReadLimits(max_bytes=path.stat().st_size - 1)
    with pytest.raises(OSError, match="file too large.*CLOTHING_MAX_FILE_BYTES"):
        read_bytes(url, limits)
    assert read_bytes(url, ReadLimits(max_bytes=path.stat().st_size)) == path.read_bytes()


@pytest.mark.timeout(300)
def test_a_chaining_path_in_the_test_stage_is_scored_from_its_own_file(local_env):
    write_image(local_env.test / "x::" / "hat" / "f.jpg", COLOURS["hat"], seed=77)
    os.mkfifo(local_env.test / "x")  # what `x::/hat/f.jpg` would open if reinterpreted
    result = materialize(checks=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    assert table.loc["x", "ERROR"] == "not a regular file (FIFO, socket or device); not read"
    assert pd.isna(table.loc["x::/hat/f.jpg", "ERROR"])
    assert table.loc["x::/hat/f.jpg", "TYPE"] == "hat" or pd.notna(
        table.loc["x::/hat/f.jpg", "TYPE"]
    )
    assert metadata_of(result, "clothing_predictions")["rows_scored"] == len(table) - 1


# --- 3. a truncated or trickling HTTP body ------------------------------------------------


def _tiny_model() -> tuple[bytes, str]:
    settings = TrainSettings(architecture="resnet18", image_size=32)
    torch.manual_seed(0)
    payload = model_payload(
        build_model("resnet18", 3).state_dict(), ["hat", "pants", "shoes"], settings,
        val_accuracy=0.9,
    )  # fmt: skip
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue(), "tiny0000tiny0000"


@pytest.fixture
def http_stage(tmp_path):
    root = tmp_path / "st"
    for name in ("good", "short", "slow"):
        write_image(root / "hat" / f"{name}.jpg", COLOURS["hat"], seed=len(name))
    server = PresignServer(
        roots={"st": root},
        delay_s=0.0,
        truncate={("st", "hat/short.jpg")},
        trickle={("st", "hat/slow.jpg")},
        trickle_s=0.5,
    )
    with serve(server):
        yield server, root


@pytest.mark.timeout(60)
def test_a_truncated_body_is_retried_then_recorded_not_raised(http_stage):
    server, root = http_stage
    url = server.mint("st", "hat/short.jpg", expires_at=9e9)
    with pytest.raises(OSError, match="IncompleteRead") as failed:
        read_bytes(url, ReadLimits(timeout_s=5, deadline_s=30))
    assert f"after {HTTP_ATTEMPTS} attempts" in str(failed.value)
    assert server.statuses("st", "hat/short.jpg") == [200] * HTTP_ATTEMPTS  # retried
    assert "signature" not in str(failed.value)


@pytest.mark.timeout(60)
def test_a_trickling_server_cannot_hold_a_read_past_its_deadline(http_stage):
    server, _ = http_stage
    url = server.mint("st", "hat/slow.jpg", expires_at=9e9)  # ~1,000 bytes at 2 bytes/s
    with pytest.raises(OSError, match="CLOTHING_HTTP_DEADLINE_SECONDS"):
        read_bytes(url, ReadLimits(timeout_s=1, deadline_s=2))


@pytest.mark.timeout(120)
def test_a_scoring_batch_records_bad_reads_per_row_and_scores_the_rest(http_stage):
    server, root = http_stage
    model, version = _tiny_model()
    rows = [
        {
            "RELATIVE_PATH": f"hat/{name}.jpg",
            "SIZE": (root / "hat" / f"{name}.jpg").stat().st_size,
            "LAST_MODIFIED": None,
            "URL": server.mint("st", f"hat/{name}.jpg", expires_at=9e9),
        }
        for name in ("good", "short", "slow")
    ]
    out = {
        r["RELATIVE_PATH"]: r
        for r in score_batch(model, version, rows, limits=ReadLimits(timeout_s=1, deadline_s=3))
    }
    assert out["hat/good.jpg"]["ERROR"] is None and out["hat/good.jpg"]["TYPE"] is not None
    for name in ("short", "slow"):
        error = out[f"hat/{name}.jpg"]["ERROR"]
        assert error.startswith("unreadable file: HTTP read failed"), error
        assert out[f"hat/{name}.jpg"]["TYPE"] is None


# --- 4. one bad batch cannot sink or hang a run ---------------------------------------------

_BIG = (4000, 3000)  # 12 Mpx: 34 MiB decoded as RGB
_BIG_MIB = _BIG[0] * _BIG[1] * 3 / 2**20

_SCORE_BIG_CHILD = """
import json, sys
from pathlib import Path
from clothing_assets.ml.scoring import score_batch
from clothing_assets.stage import stage_file_url
stage, model = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()
def rows(names):
    return [{"RELATIVE_PATH": n, "SIZE": 0, "LAST_MODIFIED": None,
             "URL": stage_file_url(str(stage), n)} for n in names]
def status_mib(field):  # VmHWM: this process's own peak (ru_maxrss inherits the parent's)
    line = next(l for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024
score_batch(model, "tiny", rows(["small.jpg"]))  # the model loaded, the read threads started
before = status_mib("VmRSS")
out = score_batch(model, "tiny", rows(sys.argv[3:]))
print(json.dumps({"grew_mib": status_mib("VmHWM") - before,
                  "scored": [r["TYPE"] is not None and r["ERROR"] is None for r in out]}))
"""


def _big_photo(seed: int) -> Image.Image:
    """A 12 Mpx image of gradients (cheap to make and encode) that differs per seed."""
    x = np.arange(_BIG[0], dtype=np.uint16)[None, :]
    y = np.arange(_BIG[1], dtype=np.uint16)[:, None]
    rgb = np.empty((_BIG[1], _BIG[0], 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = (x * (seed + 1)) % 256, (y * (seed + 2)) % 256
    rgb[..., 2] = ((x + y) // 16) % 256
    return Image.fromarray(rgb)


@pytest.mark.timeout(120)
def test_a_batch_of_large_images_never_holds_them_all_at_full_size(tmp_path):
    # Six 12 Mpx files (PNG and JPEG) in one scoring batch: decoded in full before any
    # resize, the batch alone would need 6 x 34 MiB. Each one reduced as it is decoded (a JPEG
    # at a smaller DCT scale), the worker's peak grows by about one of them.
    stage = tmp_path / "stage"
    stage.mkdir()
    write_image(stage / "small.jpg", COLOURS["hat"], seed=1)
    names = []
    for i in range(6):
        fmt, options = (("PNG", {"compress_level": 1}), ("JPEG", {}))[i % 2]
        name = f"big_{i}.{fmt.lower()}"
        _big_photo(i).save(stage / name, format=fmt, **options)
        names.append(name)
    model, _ = _tiny_model()
    (tmp_path / "model.pt").write_bytes(model)
    child = subprocess.run(
        [sys.executable, "-c", _SCORE_BIG_CHILD, str(stage), str(tmp_path / "model.pt"), *names],
        capture_output=True, text=True, timeout=400,
        # a fixed mmap threshold: every buffer of 1 MiB or more goes back to the OS when freed,
        # so the peak counts what was alive at once, not glibc's heap retention, which varied
        # with thread timing (53 to 442 MiB for the same code on a loaded machine)
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["scored"] == [True] * 6
    assert out["grew_mib"] < 3 * _BIG_MIB, out  # six images kept whole would hold 325 MiB


@pytest.mark.timeout(600)
def test_a_file_that_kills_its_workers_gets_an_error_and_every_other_row_is_scored(
    local_env, monkeypatch
):
    # The run's own LocalCluster (worker processes under nannies); whichever worker starts
    # to read the poison file dies on the spot, as one the OOM killer ends mid-decode. Five
    # workers outnumber the four deaths: on a loaded 2-core machine a nanny's restart can take
    # minutes or not come at all, and the rows must not wait for one.
    monkeypatch.setenv("CLOTHING_DASK_WORKERS", "5")
    version = register_model(local_env, _tiny_model()[0])
    poison, deaths = "pants/pants_1.jpg", local_env.root / "deaths"
    monkeypatch.setenv(faults.EXIT_WHEN_SCORING, poison)
    monkeypatch.setenv(faults.EXIT_MARKER, str(deaths))
    with dask.config.set({"distributed.worker.preload": ["clothing_assets_tests.support.faults"]}):
        result = materialize(
            ["clothing_dataset", "clothing_test", "clothing_predictions"],
            dg.RunConfig(ops={"clothing_predictions": {"config": {"batch_size": 4}}}),
        )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    # allowed-failures 1: two workers died on its batch of 4, two more on the file alone
    assert len(deaths.read_text().splitlines()) == 4

    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    error = table.loc[poison, "ERROR"]
    assert error.startswith("the Dask worker died while scoring this file (KilledWorker"), error
    assert pd.isna(table.loc[poison, "TYPE"]) and table.loc[poison, "MODEL_VERSION"] == version
    others = table.drop(index=poison)
    assert len(others) == 8 and others["ERROR"].isna().all()
    assert others["TYPE"].isin(CLASSES).all() and (others["MODEL_VERSION"] == version).all()
    meta = metadata_of(result, "clothing_predictions")
    assert meta["rows_scored"] == 9 and meta["rows_with_error"] == 1


# --- 6. runs are retried where a retry is safe ---------------------------------------------

_HOLD_LOCK = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.timeout(120)
def test_a_catalog_sync_that_meets_a_locked_warehouse_is_retried_and_succeeds(local_env):
    from dagster_duckdb import DuckDBResource

    from clothing_assets.environment import resources_for
    from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse

    first = materialize(["clothing_dataset_train"], None)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    # another process holds the file for 4 s; this warehouse gives up waiting after 1 s
    impatient = DuckDBWarehouse(
        duckdb=DuckDBResource(database=str(local_env.duckdb)), lock_timeout_s=1.0
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(local_env.duckdb), "4"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = materialize(
            ["clothing_train"], None, resources={**resources_for(), "warehouse": impatient}
        )
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried and all(e.step_key == "clothing_train" for e in retried)
    assert "locked by another process" in str(retried[0].event_specific_data.error)
    assert len(read_table(local_env, "clothing_train")) == 18


def test_an_unusable_warehouse_file_is_not_retried(local_env):
    local_env.duckdb.parent.mkdir(parents=True)
    local_env.duckdb.write_bytes(b"not a database" * 100)
    result = materialize(["clothing_dataset_train"], None)
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events]
    assert "STEP_FAILURE" in kinds and "STEP_UP_FOR_RETRY" not in kinds
