"""Bad input in the stages: every decodable image is used, every other file is kept in its
catalog with a one-line ERROR and counted, and the run completes. Every bad file is made here."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from clothing_assets.ml.images import ImageDecodeError, decode_image
from clothing_assets_tests.support import (
    CLASSES,
    COLOURS,
    make_stage,
    materialize,
    metadata_of,
    read_table,
    step_failure,
    write_image,
)
from clothing_assets_tests.support.badfiles import encode, pixels, spoil_stage

TRAIN_ONLY = ["clothing_dataset_train", "clothing_train", "trained_model", "champion_model"]


# --- decoding -------------------------------------------------------------------------------

_BOMB_CHILD = """
import json, sys
from pathlib import Path
from clothing_assets.ml.images import ImageDecodeError, decode_image
from clothing_assets_tests.support.badfiles import bomb_jpeg, bomb_png
def peak_mib():  # VmHWM: this process's own peak (ru_maxrss inherits the parent's)
    line = next(l for l in Path("/proc/self/status").read_text().splitlines()
                if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
out = {"peak_before_mib": peak_mib()}
for name, data in [("png", bomb_png()), ("jpeg", bomb_jpeg()),
                   ("png-just-over-the-limit", bomb_png(10_000, 10_000))]:
    try:
        decode_image(data)
        out[name] = "decoded"
    except ImageDecodeError as exc:
        out[name] = str(exc)
out["peak_after_mib"] = peak_mib()
print(json.dumps(out))
"""


def test_decompression_bombs_are_refused_from_the_header_without_allocating():
    # 30,000 x 30,000 RGB would need 2.5 GiB; 10,000 x 10,000 (under Pillow's own error
    # threshold, where it only warns) 286 MiB. In a fresh process the peak barely moves.
    child = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    for name in ("png", "jpeg", "png-just-over-the-limit"):
        assert out[name].startswith("decompression bomb refused"), out
        assert "\n" not in out[name]
    assert out["peak_after_mib"] - out["peak_before_mib"] < 100, out


def test_pillows_decompression_bomb_limit_stays_on():
    import clothing_assets.definitions  # noqa: F401 - everything the code location imports

    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # Pillow's default


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PPM", "RGB"), ("ICO", "RGB"), ("TGA", "RGB"), ("PCX", "RGB")]
)
def test_formats_pillow_knows_but_the_product_does_not_support_are_never_opened(fmt, mode):
    data = encode(Image.fromarray(pixels((50, 60, 70))).convert(mode), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would open it
    with pytest.raises(ImageDecodeError, match="not an image in a supported format"):
        decode_image(data)


# --- whole graph ----------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_bad_files_are_kept_with_their_error_and_every_good_image_is_used(local_env):
    outside = local_env.root / "outside"
    train_bad = spoil_stage(local_env.train, outside, seed=1)
    write_image(local_env.train / "at-the-root.jpg", COLOURS["hat"], seed=3)
    train_bad["at-the-root.jpg"] = "no class folder"
    test_bad = spoil_stage(local_env.test, outside, seed=2)
    write_image(local_env.test / "jacket" / "unknown-class.jpg", COLOURS["pants"], seed=4)
    write_image(local_env.test / "loose at the root.jpg", COLOURS["shoes"], seed=5)

    result = materialize(checks=True)
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    train = read_table(local_env, "clothing_train").set_index("RELATIVE_PATH")
    files = {
        str(p.relative_to(local_env.train))
        for p in local_env.train.rglob("*")
        if p.is_file() or p.is_symlink()
    }
    assert set(train.index) == files  # every file is in the catalog, once
    errors = train["ERROR"].dropna().to_dict()
    assert set(errors) == set(train_bad), errors
    for path, reason in train_bad.items():
        assert errors[path].startswith(reason), (path, errors[path])
        assert "\n" not in errors[path]
    good_train = len(files) - len(train_bad)
    model = metadata_of(result, "trained_model")
    assert model["train_images"] + model["val_images"] == good_train  # every good image used
    assert model["rows_with_error"] == len(train_bad)
    assert metadata_of(result, "clothing_train")["rows_with_error"] == 2  # root file, link out

    test = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    test_files = {
        str(p.relative_to(local_env.test))
        for p in local_env.test.rglob("*")
        if p.is_file() or p.is_symlink()
    }
    assert set(test.index) == test_files
    bad = test.loc[list(test_bad)]
    assert bad["TYPE"].isna().all() and bad["CONFIDENCE"].isna().all()
    for path, reason in test_bad.items():
        assert bad.loc[path, "ERROR"].startswith(reason), (path, bad.loc[path, "ERROR"])
    good = test.drop(index=list(test_bad))
    assert good["ERROR"].isna().all(), good["ERROR"].dropna()
    assert good["TYPE"].isin(CLASSES).all()  # every decodable image is scored
    assert good["CONFIDENCE"].between(0, 1).all()
    assert test.loc["jacket/unknown-class.jpg", "TYPE"] in CLASSES
    assert 'it\'s a "quoted" naïve Größe 帽子; name.jpg' in {p.split("/")[-1] for p in good.index}

    scored = metadata_of(result, "clothing_predictions")
    # decode failures are scored once with their ERROR; the refused link is never read
    assert scored["rows_scored"] == len(test) - 1
    assert scored["rows_with_error"] == len(test_bad) - 1
    assert scored["table_rows_with_error"] == len(test_bad)
    # accuracy only over images whose folder is a class the model knows
    known = [p for p in good.index if p.split("/")[0] in CLASSES and "/" in p]
    assert scored["labelled_rows"] == len(known)

    # the asset checks flag every unusable file (they run after training and scoring, which
    # find the undecodable ones), and find every readable row scored
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for table, flagged in (("clothing_train", len(train_bad)), ("clothing_test", len(test_bad))):
        check = checks[f"{table}_unusable_files"]
        assert not check.passed and check.metadata["rows_with_error"].value == flagged
    assert checks["predictions_complete"].passed
    assert checks["clothing_test_matches_stage"].passed

    # the next run finds nothing to do: bad rows are not retried, nothing is duplicated
    again = materialize(["clothing_dataset", "clothing_test", "clothing_predictions"], None)
    assert again.success
    assert metadata_of(again, "clothing_predictions")["rows_scored"] == 0
    assert len(read_table(local_env, "clothing_test")) == len(test)


def test_empty_stages_fail_clearly_or_give_an_empty_result(local_env):
    # an empty train stage (one empty class folder): a clear Failure, not a torch traceback
    shutil.rmtree(local_env.train)
    (local_env.train / "hat").mkdir(parents=True)
    result = materialize(TRAIN_ONLY)
    assert not result.success
    error = step_failure(result)
    assert error.cls_name == "Failure"
    assert "0 usable images" in error.message and "CLOTHING_TRAIN_STAGE_URL" in error.message
    assert metadata_of(result, "clothing_dataset_train")["file_count"] == 0

    # a single class cannot be trained either, and says so
    write_image(local_env.train / "hat" / "only.jpg", COLOURS["hat"], seed=1)
    error = step_failure(materialize(TRAIN_ONLY))
    assert error.cls_name == "Failure" and "at least two classes" in error.message

    # an empty test stage scores nothing and succeeds
    shutil.rmtree(local_env.train)
    make_stage(local_env.train, 6)  # a validation image per class: else never promoted
    shutil.rmtree(local_env.test)
    local_env.test.mkdir()
    result = materialize()
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    scored = metadata_of(result, "clothing_predictions")
    assert scored["rows_scored"] == 0 and scored["rows_in_table"] == 0
    assert len(read_table(local_env, "clothing_test")) == 0
