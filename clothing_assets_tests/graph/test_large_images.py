"""A scoring batch of large photos (PNG and JPEG) reduces each one as it is decoded: the
process's peak memory grows by about one image, measured in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clothing_assets_tests.support import (
    COLOURS,
    write_image,
)
from clothing_assets_tests.support.models import tiny_model

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
    model, _ = tiny_model()
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
