"""near_duplicates, its leakage check, label_issues, the `labels` commands and training's use
of their tables, on DuckDB: the catalogs from generated stages, clothing_embeddings written
with planted vectors (the embedding itself has its own tests)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from dagster_duckdb import DuckDBResource

from clothing_assets.cli import main
from clothing_assets.defs.assets.model import TrainConfig, _reviewed
from clothing_assets.ml.data import training_rows
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets_tests.support import metadata_of

CENTRES = {"hat": 0, "pants": 1, "shoes": 2}
MISLABELLED = "pants/pants_5.jpg"  # its vector is a hat's
LEAKED = ("hat/hat_0.jpg", "hat/hat_0.jpg")  # (train, test) paths with nearly the same vector
EXACT = ("shoes/shoes_0.jpg", "shoes/shoes_1.jpg")  # two train files with the same bytes
# train pairs at cosine 0.9 (a candidate, under the confirming cosine): the first with equal
# perceptual hashes (a near copy), the second with hashes far apart (two photos alike)
SAME_HASH = ("pants/pants_0.jpg", "pants/pants_1.jpg")
FAR_HASH = ("shoes/shoes_2.jpg", "shoes/shoes_3.jpg")


def _vector(rng: np.random.Generator, centre: int) -> np.ndarray:
    vector = np.zeros(64, dtype=np.float32)
    vector[centre] = 1.0
    vector[3:] = 0.3 * rng.standard_normal(61)
    return vector / np.linalg.norm(vector)


def _rows(catalog: pd.DataFrame, stage: str, rng) -> list[dict]:
    now = datetime.now(UTC)
    rows = []
    for r in catalog.itertuples():
        folder = "hat" if r.RELATIVE_PATH == MISLABELLED else r.RELATIVE_PATH.split("/")[0]
        rows.append({
            "RELATIVE_PATH": r.RELATIVE_PATH, "STAGE": stage, "MODEL_VERSION": "v1",
            "SIZE": r.SIZE, "LAST_MODIFIED": r.LAST_MODIFIED, "ETAG": r.ETAG,
            "CONTENT_SHA256": f"{stage}:{r.RELATIVE_PATH}",
            "EMBEDDING": _vector(rng, CENTRES[folder]),
            "ERROR": None, "EMBEDDED_AT": now,
            "PHASH": int(rng.integers(-(2**63), 2**63 - 1)),
            "PHASH_CENTER": int(rng.integers(-(2**63), 2**63 - 1)),
        })  # fmt: skip
    return rows


@pytest.fixture
def embedded(local_env):
    """The catalogs synced and clothing_embeddings holding a planted leak, exact pair and
    mislabel; the warehouse."""
    from clothing_assets_tests.support import materialize

    synced = materialize(
        ["clothing_dataset_train", "clothing_dataset", "clothing_train", "clothing_test"],
        run_config=None,
    )
    assert synced.success
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(local_env.duckdb)))
    rng = np.random.default_rng(0)
    train = _rows(warehouse.read_catalog("clothing_train"), "train", rng)
    test = _rows(warehouse.read_catalog("clothing_test"), "test", rng)
    by_path = {r["RELATIVE_PATH"]: r for r in train}
    leaked = next(r for r in test if r["RELATIVE_PATH"] == LEAKED[1])
    leaked["EMBEDDING"] = by_path[LEAKED[0]]["EMBEDDING"] + 0.01
    by_path[EXACT[1]]["EMBEDDING"] = by_path[EXACT[0]]["EMBEDDING"] - 0.2  # bytes say copies
    by_path[EXACT[1]]["CONTENT_SHA256"] = by_path[EXACT[0]]["CONTENT_SHA256"]
    for a, b in (SAME_HASH, FAR_HASH):
        _at_cosine(by_path[a], by_path[b], 0.9, rng)
    by_path[SAME_HASH[1]]["PHASH"] = by_path[SAME_HASH[0]]["PHASH"]
    by_path[FAR_HASH[1]]["PHASH"] = ~by_path[FAR_HASH[0]]["PHASH"]
    by_path[FAR_HASH[1]]["PHASH_CENTER"] = ~by_path[FAR_HASH[0]]["PHASH"]
    for row in train + test:
        row["EMBEDDING"] = row["EMBEDDING"] / np.linalg.norm(row["EMBEDDING"])
    assert warehouse.write_embedding_rows(train + test) == len(train) + len(test)
    return warehouse


def _at_cosine(a: dict, b: dict, cosine: float, rng: np.random.Generator) -> None:
    """Set b's EMBEDDING at `cosine` to a's (both unit vectors)."""
    first = a["EMBEDDING"] / np.linalg.norm(a["EMBEDDING"])
    other = rng.standard_normal(first.shape).astype(np.float32)
    other -= (other @ first) * first
    a["EMBEDDING"] = first
    b["EMBEDDING"] = cosine * first + np.sqrt(1 - cosine**2) * other / np.linalg.norm(other)


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [
        e.event_specific_data for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "no_train_test_leakage"
    ]  # fmt: skip
    return evaluation


def test_pairs_leakage_and_label_issues_are_materialized(embedded, local_env, capsys):
    from clothing_assets_tests.support import materialize

    result = materialize(["near_duplicates", "label_issues"], run_config=None, checks=True)
    assert result.success
    pairs = embedded.read_results("clothing_near_duplicates")
    kinds = {(r.PATH_A, r.STAGE_A, r.PATH_B, r.STAGE_B): r.KIND for r in pairs.itertuples()}
    assert kinds[(LEAKED[0], "train", LEAKED[1], "test")] == "near"
    assert kinds[(EXACT[0], "train", EXACT[1], "train")] == "exact"
    assert kinds[(SAME_HASH[0], "train", SAME_HASH[1], "train")] == "near"
    assert (FAR_HASH[0], "train", FAR_HASH[1], "train") not in kinds
    shown = metadata_of(result, "near_duplicates")
    assert (shown["pairs_exact"], shown["pairs_train_test"], shown["leaked_train_images"]) == (
        1, 1, 1)  # fmt: skip
    assert "data:image/png;base64," in shown["gallery"]
    check = _check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["leaked_test_images"].value == 1

    issues = embedded.read_results("clothing_label_issues")
    assert issues.iloc[0]["RELATIVE_PATH"] == MISLABELLED
    assert (issues.iloc[0]["GIVEN"], issues.iloc[0]["SUGGESTED"]) == ("pants", "hat")
    assert "data:image/png;base64," in metadata_of(result, "label_issues")["gallery"]

    assert main(["labels", "list"]) == 0
    assert MISLABELLED in capsys.readouterr().out
    assert main(["labels", "fix", MISLABELLED, "hat"]) == 0
    assert "pants -> hat" in capsys.readouterr().out
    assert main(["labels", "list"]) == 0
    assert MISLABELLED not in capsys.readouterr().out.split("\n\n")[0]
    # the next label_issues run judges it as a hat, and the person's label keeps it out
    assert materialize(["label_issues"], run_config=None).success
    assert MISLABELLED not in set(embedded.read_results("clothing_label_issues")["RELATIVE_PATH"])
    fixes = embedded.read_label_fixes()
    assert fixes[["RELATIVE_PATH", "DECISION", "LABEL", "PREVIOUS_LABEL"]].values.tolist() == [
        [MISLABELLED, "fix", "hat", "pants"]
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["labels", "fix", "pants/nope.jpg", "hat"], "is not an image of clothing_train"),
        (["labels", "fix", MISLABELLED, "scarf"], "unknown class 'scarf'"),
        (["labels", "keep", "../etc/passwd"], "is not an image of clothing_train"),
    ],
)
def test_an_unknown_path_or_class_is_one_error_line_and_changes_nothing(
    embedded, capsys, argv, message
):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert embedded.read_label_fixes().empty


def test_training_uses_the_fixed_labels_and_leaves_out_leaked_images(embedded, local_env):
    from clothing_assets_tests.support import materialize

    assert materialize(["near_duplicates"], run_config=None).success
    embedded.record_label_decision(MISLABELLED, "fix", "hat", "pants")
    embedded.record_label_decision("hat/hat_1.jpg", "keep", "hat", "hat")
    rows = training_rows(embedded.read_catalog("clothing_train"), 1.0, env_var="X")
    images = torch.arange(len(rows))
    context = dg.build_asset_context()
    kept, kept_images, shown = _reviewed(context, embedded, rows, images, exclude_leaked=True)
    assert LEAKED[0] not in set(kept["RELATIVE_PATH"]) and len(kept) == len(rows) - 1
    assert kept_images.tolist() == [i for i, p in enumerate(rows["RELATIVE_PATH"])
                                    if p != LEAKED[0]]  # fmt: skip
    assert kept.set_index("RELATIVE_PATH").at[MISLABELLED, "CLASS"] == "hat"
    assert (shown["leaked_excluded"].value, shown["labels_fixed"].value) == (1, 1)
    assert TrainConfig().exclude_leaked is True  # what a run without config does
    everything, _, shown = _reviewed(context, embedded, rows, images, exclude_leaked=False)
    assert len(everything) == len(rows) and shown["leaked_excluded"].value == 0
