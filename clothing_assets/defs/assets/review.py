"""The review group, built on clothing_embeddings: `near_duplicates` (copies within and across
the stages, with the warning check `no_train_test_leakage`) and `label_issues` (the training
images whose given label their embeddings disagree with, the label-review queue).

Training reads both tables but does not depend on these assets: they are built from the
champion's embeddings, which come after training, so a dependency would be a cycle. The next
`trained_model` run after them leaves out the leaked images and uses the fixed labels.
"""

from collections.abc import Sequence

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.defs.assets.embeddings import image_embeddings
from clothing_assets.ml.duplicates import CANDIDATE_THRESHOLD, CONFIRM_THRESHOLD, MAX_HAMMING
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.stage import StageResource

GALLERY_ROWS = 8


class DuplicatesConfig(dg.Config):
    """How `near_duplicates` tells a copy from a different image."""

    threshold: float = Field(
        default=CANDIDATE_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="Cosine similarity of two embeddings at or above which the images are a "
        "candidate pair, confirmed by their perceptual hashes or confirm_threshold (calibrated "
        "with the other two on resized, recompressed, cropped and re-encoded copies).",
    )
    max_hamming: int = Field(
        default=MAX_HAMMING,
        ge=0,
        le=64,
        description="The most bits in which a candidate pair's perceptual hashes may differ "
        "for the images to be near copies.",
    )
    confirm_threshold: float = Field(
        default=CONFIRM_THRESHOLD,
        ge=0.0,
        le=1.01,
        description="Cosine similarity at or above which a candidate pair is a near copy "
        "whatever its hashes (above 1: never).",
    )


def _tile(warehouse: Warehouse, stages: dict[str, StageResource], stage: str, path: str):
    """The image `path` of stage `stage` as a 3x128x128 tensor, or None when it cannot be read."""
    from clothing_assets.ml.images import ImageDecodeError, decode_image, resize_square
    from clothing_assets.stage import read_bytes

    (url,) = warehouse.file_urls(stages[stage].name, [path])
    try:
        return resize_square(decode_image(read_bytes(url)), 128)
    except (ImageDecodeError, OSError):
        return None


def _pairs_gallery(
    warehouse: Warehouse, stages: dict[str, StageResource], pairs: pd.DataFrame
) -> bytes | None:
    """The closest pairs side by side, captioned with their similarity and kind."""
    from contextlib import ExitStack

    import torch

    from clothing_assets.plots import gallery_png

    tiles = []
    with ExitStack() as sessions:  # one connection per stage mints every URL (Snowflake)
        for stage in stages.values():
            sessions.enter_context(warehouse.url_session(stage.name))
        for row in pairs.head(GALLERY_ROWS).itertuples():
            a = _tile(warehouse, stages, row.STAGE_A, row.PATH_A)
            b = _tile(warehouse, stages, row.STAGE_B, row.PATH_B)
            if a is not None and b is not None:
                caption = f"{row.STAGE_A}/{row.PATH_A}\n{row.STAGE_B}/{row.PATH_B}\n"
                tiles.append(
                    (torch.cat([a, b], dim=2), f"{caption}{row.KIND} {row.SIMILARITY:.3f}")
                )
    return gallery_png(tiles, "closest pairs (A | B)", columns=2) if tiles else None


def _markdown_table(header: Sequence[str], rows: list[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dg.asset(group_name="review", deps=[image_embeddings], kinds={"numpy"})
def near_duplicates(
    context: dg.AssetExecutionContext,
    config: DuplicatesConfig,
    warehouse: Warehouse,
    train_stage: StageResource,
    test_stage: StageResource,
) -> dg.MaterializeResult:
    """clothing_near_duplicates: every pair of embedded images (train and test, within and
    across the stages) with equal content hashes ('exact') or near copies ('near': embeddings at
    cosine similarity >= the threshold whose perceptual hashes are within max_hamming bits, or
    whose cosine is >= confirm_threshold), replaced whole on each run. A train image paired
    with a test image is leaked: training leaves it out while its `exclude_leaked` is on."""
    import time

    from clothing_assets.ml.duplicates import duplicate_pairs, leaked_train_paths, pair_counts
    from clothing_assets.plots import png_markdown

    embedded = warehouse.read_embeddings()
    started = time.perf_counter()
    pairs = duplicate_pairs(embedded, config.threshold, max_hamming=config.max_hamming,
                            confirm=config.confirm_threshold)  # fmt: skip
    seconds = time.perf_counter() - started
    warehouse.replace_results("clothing_near_duplicates", pairs)
    counts = pair_counts(pairs)
    leaked = leaked_train_paths(pairs)
    context.log.info(
        f"{len(pairs)} pairs among {len(embedded)} embeddings in {seconds:.1f}s "
        f"({counts['exact']} exact, {counts['near']} near); {len(leaked)} train images leaked"
    )
    metadata: dict[str, dg.MetadataValue] = {
        "embeddings": dg.MetadataValue.int(len(embedded)),
        "pairs": dg.MetadataValue.int(len(pairs)),
        **{f"pairs_{name}": dg.MetadataValue.int(value) for name, value in counts.items()},
        "leaked_train_images": dg.MetadataValue.int(len(leaked)),
        "threshold": dg.MetadataValue.float(config.threshold),
        "max_hamming": dg.MetadataValue.int(config.max_hamming),
        "confirm_threshold": dg.MetadataValue.float(config.confirm_threshold),
        "pass_seconds": dg.MetadataValue.float(round(seconds, 3)),
        "closest_pairs": dg.MetadataValue.md(_markdown_table(
            ["A", "B", "similarity", "kind"],
            [[f"{r.STAGE_A}/{r.PATH_A}", f"{r.STAGE_B}/{r.PATH_B}", f"{r.SIMILARITY:.4f}", r.KIND]
             for r in pairs.head(20).itertuples()],
        ) if len(pairs) else "none"),
    }  # fmt: skip
    gallery = _pairs_gallery(warehouse, {"train": train_stage, "test": test_stage}, pairs)
    if gallery is not None:
        metadata["gallery"] = dg.MetadataValue.md(png_markdown(gallery, "closest pairs"))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=near_duplicates,
    description="Warns when a test image has an exact or near copy in the train stage: such a "
    "copy inflates every accuracy measured on the test stage.",
)
def no_train_test_leakage(warehouse: Warehouse) -> dg.AssetCheckResult:
    pairs = warehouse.read_results("clothing_near_duplicates")
    cross = pairs[(pairs["STAGE_A"] == "train") & (pairs["STAGE_B"] == "test")]
    return dg.AssetCheckResult(
        passed=cross.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "leaked_pairs": dg.MetadataValue.int(len(cross)),
            "leaked_train_images": dg.MetadataValue.int(cross["PATH_A"].nunique()),
            "leaked_test_images": dg.MetadataValue.int(cross["PATH_B"].nunique()),
            "examples": dg.MetadataValue.json(
                [f"{r.PATH_A} ~ {r.PATH_B}" for r in cross.head(20).itertuples()]
            ),
        },
        description=None if cross.empty else (
            f"{cross['PATH_B'].nunique()} test images have a copy among the train images; "
            "trained_model leaves those train images out while exclude_leaked is on"
        ),
    )  # fmt: skip


def _issues_gallery(
    warehouse: Warehouse, train_stage: StageResource, issues: pd.DataFrame
) -> bytes | None:
    from clothing_assets.plots import gallery_png

    tiles = []
    with warehouse.url_session(train_stage.name):
        for row in issues.head(12).itertuples():
            image = _tile(warehouse, {"train": train_stage}, "train", row.RELATIVE_PATH)
            if image is not None:
                caption = f"#{row.RANK} {row.GIVEN} → {row.SUGGESTED} ({row.SCORE:.2f})"
                tiles.append((image, caption))
    return gallery_png(tiles, "most suspicious labels (given → suggested)") if tiles else None


@dg.asset(group_name="review", deps=[image_embeddings], kinds={"pytorch"})
def label_issues(
    context: dg.AssetExecutionContext, warehouse: Warehouse, train_stage: StageResource
) -> dg.MaterializeResult:
    """clothing_label_issues: the label-review queue, most suspicious first. Each training
    image is judged by a linear head on the embeddings trained on the other folds only (out of
    fold), against its label as training uses it (a person's fix where there is one); an image
    whose label a person set or confirmed is left out of the queue."""
    from clothing_assets.ml.label_issues import effective_labels, unanswered
    from clothing_assets.ml.label_issues import label_issues as find_issues
    from clothing_assets.plots import png_markdown
    from clothing_assets.stage import class_of

    embedded = warehouse.read_embeddings(stage="train")
    embedded["CLASS"] = embedded["RELATIVE_PATH"].map(class_of)
    embedded = embedded.dropna(subset=["CLASS"]).reset_index(drop=True)
    decisions = warehouse.latest_label_decisions()
    given = effective_labels(embedded, decisions)
    features = _stack(embedded)
    issues = find_issues(embedded["RELATIVE_PATH"].tolist(), given.tolist(), features)
    flagged = len(issues)
    issues = unanswered(issues, decisions).reset_index(drop=True)
    issues["RANK"] = range(1, len(issues) + 1)
    warehouse.replace_results("clothing_label_issues", issues)
    context.log.info(f"{len(issues)} of {len(embedded)} training labels flagged for review")
    metadata: dict[str, dg.MetadataValue] = {
        "train_embeddings": dg.MetadataValue.int(len(embedded)),
        "flagged": dg.MetadataValue.int(len(issues)),
        "answered_by_a_person": dg.MetadataValue.int(flagged - len(issues)),
        "fixed_by_a_person": dg.MetadataValue.int(int((decisions["DECISION"] == "fix").sum())),
        "top": dg.MetadataValue.md(_markdown_table(
            ["rank", "path", "given", "suggested", "score"],
            [[r.RANK, r.RELATIVE_PATH, r.GIVEN, r.SUGGESTED, f"{r.SCORE:.3f}"]
             for r in issues.head(20).itertuples()],
        ) if len(issues) else "none"),
    }  # fmt: skip
    gallery = _issues_gallery(warehouse, train_stage, issues)
    if gallery is not None:
        metadata["gallery"] = dg.MetadataValue.md(png_markdown(gallery, "label issues"))
    return dg.MaterializeResult(metadata=metadata)


def _stack(frame: pd.DataFrame):
    import numpy as np

    if frame.empty:
        return np.zeros((0, 1), dtype=np.float32)
    return np.stack(frame["EMBEDDING"].to_numpy()).astype(np.float32, copy=False)
