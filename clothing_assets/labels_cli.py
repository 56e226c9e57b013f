"""`clothing-assets labels`: the label-review queue from a terminal, and a person's decisions.

clothing-assets labels list [-n 20]
clothing-assets labels fix PATH CLASS
clothing-assets labels keep PATH

Every decision is appended to clothing_label_fixes with its time and the label it replaced;
training uses a fixed label, and an image whose label a person set or confirmed leaves the
queue.
"""

from __future__ import annotations

import argparse
import os

import pandas as pd

from clothing_assets.commandline import positive_int
from clothing_assets.ml.label_issues import unanswered
from clothing_assets.settings import ConfigurationError

REVIEW_TABLES = ("clothing_label_issues", "clothing_label_fixes")


def format_queue(issues: pd.DataFrame, queue: pd.DataFrame, rows: int) -> str:
    """The first `rows` of the queue as a plain-text table, and a summary line."""
    if issues.empty:
        return "no label issues: materialize label_issues (after image_embeddings)"
    lines = ["rank  score  given -> suggested  path"]
    for r in queue.head(rows).itertuples():
        lines.append(f"{r.RANK:>4}  {r.SCORE:.3f}  {r.GIVEN} -> {r.SUGGESTED}  {r.RELATIVE_PATH}")
    summary = (
        f"{len(queue)} of {len(issues)} flagged images await review "
        f"({len(issues) - len(queue)} answered); decide with `clothing-assets labels fix PATH "
        "CLASS` or `clothing-assets labels keep PATH`"
    )
    return "\n".join([*lines, "", summary]) if len(queue) else summary


def _review_frames(warehouse) -> tuple[pd.DataFrame, pd.DataFrame]:
    present = {str(name).lower() for name in warehouse.table_names()}
    missing = [table for table in REVIEW_TABLES if table not in present]
    if missing:
        raise ConfigurationError(
            f"{warehouse.describe()} holds no {', '.join(missing)} table: materialize "
            "label_issues first"
        )
    return warehouse.read_results("clothing_label_issues"), warehouse.latest_label_decisions()


def labels_list(args: argparse.Namespace) -> int:
    """Print the open label-review queue, most suspicious first, read-only."""
    from clothing_assets.environment import open_warehouse

    with open_warehouse(read_only=True) as warehouse:
        issues, decisions = _review_frames(warehouse)
    print(format_queue(issues, unanswered(issues, decisions), args.rows))
    return 0


def _current_label(warehouse, path: str) -> tuple[str, list[str]]:
    """(the label training uses for `path` now, the classes of clothing_train); a path that
    is not a usable training image is a ConfigurationError."""
    from clothing_assets.ml.label_issues import effective_labels
    from clothing_assets.stage import class_of

    train = warehouse.read_catalog("clothing_train")
    train = train.assign(CLASS=train["RELATIVE_PATH"].map(class_of)).dropna(subset=["CLASS"])
    classes = sorted(train["CLASS"].unique())
    row = train[train["RELATIVE_PATH"] == path]
    if row.empty:
        raise ConfigurationError(
            f"{path!r} is not an image of clothing_train: give its RELATIVE_PATH as "
            "`clothing-assets labels list` shows it"
        )
    decisions = warehouse.latest_label_decisions()
    return str(effective_labels(row, decisions).iloc[0]), classes


def _decide(path: str, decision: str, label: str | None) -> int:
    from clothing_assets.environment import open_warehouse

    # checked read-only first: a mistyped path or class changes nothing, creates nothing
    with open_warehouse(read_only=True) as warehouse:
        _review_frames(warehouse)
        current, classes = _current_label(warehouse, path)
    if label is not None and label not in classes:
        raise ConfigurationError(
            f"unknown class {label!r}; clothing_train's classes are {', '.join(classes)}"
        )
    new = current if label is None else label
    with open_warehouse(read_only=False) as warehouse:
        warehouse.record_label_decision(path, decision, new, current, os.environ.get("USER"))
    if decision == "keep":
        print(f"{path}: kept as {current}; it leaves the review queue")
    else:
        print(f"{path}: {current} -> {new}; the next trained_model run uses {new}")
    return 0


def labels_fix(args: argparse.Namespace) -> int:
    """Record that `args.path`'s label is `args.label`."""
    return _decide(args.path, "fix", args.label)


def labels_keep(args: argparse.Namespace) -> int:
    """Record that `args.path`'s current label is right."""
    return _decide(args.path, "keep", None)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `labels list|fix|keep`; each sets `func(args) -> exit code`."""
    labels = subparsers.add_parser("labels", help="the label-review queue").add_subparsers(
        dest="labels_command", required=True, metavar="ACTION", help="what to do with it"
    )
    listing = labels.add_parser("list", help="images whose label the data disagrees with")
    listing.add_argument(
        "-n", "--rows", type=positive_int, default=20, help="how many of the queue to show"
    )
    listing.set_defaults(func=labels_list)
    fix = labels.add_parser("fix", help="set a training image's label")
    fix.add_argument("path", metavar="PATH", help="a RELATIVE_PATH from `labels list`")
    fix.add_argument("label", metavar="CLASS", help="the right class (a class of clothing_train)")
    fix.set_defaults(func=labels_fix)
    keep = labels.add_parser("keep", help="confirm a training image's label")
    keep.add_argument("path", metavar="PATH", help="a RELATIVE_PATH from `labels list`")
    keep.set_defaults(func=labels_keep)
