"""`clothing-assets`: the model registry and the predictions from a terminal, and the model
server.

clothing-assets models list
clothing-assets models promote VERSION [--reason TEXT] [--no-rescore] [--force]
clothing-assets predictions [-n 20]
clothing-assets serve [--host 127.0.0.1] [--port 8000] [--workers N]
clothing-assets predict IMAGE...
clothing-assets similar IMAGE [-k 8]
clothing-assets labels list [-n 20]
clothing-assets labels fix PATH CLASS
clothing-assets labels keep PATH

A configuration or usage mistake ends with one `error:` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clothing_assets.commandline import CommandParser, fail, positive_int, run
from clothing_assets.labels_cli import add_commands as add_label_commands
from clothing_assets.serve.cli import add_commands as add_serve_commands

LIST_COLUMNS = [
    ("version", "VERSION"),
    ("status", "STATUS"),
    ("val_acc", "VAL_ACCURACY"),
    ("created", "CREATED_AT"),
    ("rows_scored", "ROWS_SCORED"),
    ("stored", "DELETED_AT"),
    ("reason", "REASON"),
]


def format_models(models: pd.DataFrame) -> str:
    """The registry as a plain-text table, newest first."""
    if models.empty:
        return "no model is registered yet: materialize trained_model and champion_model"
    rows = []
    for _, m in models.iloc[::-1].iterrows():
        accuracy = m["VAL_ACCURACY"]
        rows.append([
            m["VERSION"],
            m["STATUS"],
            "n/a" if pd.isna(accuracy) else f"{accuracy:.3f}",
            pd.Timestamp(m["CREATED_AT"]).strftime("%Y-%m-%d %H:%M"),
            str(int(m["ROWS_SCORED"])),
            "yes" if pd.isna(m["DELETED_AT"]) else "deleted",
            str(m["REASON"]),
        ])  # fmt: skip
    return _table([name for name, _ in LIST_COLUMNS], rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Plain-text columns, padded to their widths; the last one is free text."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def models_list(args: argparse.Namespace) -> int:
    """Print the registry, read-only."""
    from clothing_assets.environment import open_warehouse

    with open_warehouse(read_only=True) as warehouse:
        print(format_models(warehouse.read_models()))
    return 0


def _utc(value: object) -> str:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def format_predictions(catalog: pd.DataFrame, latest: int) -> str:
    """The `latest` most recently scored rows of clothing_test, newest first, then the rows
    per predicted class and a summary line."""
    if catalog.empty:
        return "clothing_test is empty: materialize clothing_test (the test stage's catalog)"
    scored = catalog[catalog["PRED_TIMESTAMP"].notna()]
    if scored.empty:
        return (
            f"none of the {len(catalog)} rows of clothing_test is scored yet: "
            "materialize clothing_predictions"
        )
    newest = scored.sort_values(["PRED_TIMESTAMP", "RELATIVE_PATH"], ascending=[False, True])
    rows = []
    for _, r in newest.head(latest).iterrows():
        failed = not pd.isna(r["ERROR"])
        rows.append([
            r["RELATIVE_PATH"],
            "(error)" if failed or pd.isna(r["TYPE"]) else r["TYPE"],
            "" if pd.isna(r["CONFIDENCE"]) else f"{r['CONFIDENCE']:.3f}",
            _utc(r["PRED_TIMESTAMP"]),
            "" if pd.isna(r["MODEL_VERSION"]) else r["MODEL_VERSION"],
            str(r["ERROR"]) if failed else "",
        ])  # fmt: skip
    header = ["path", "class", "confidence", "scored_utc", "model_version", "error"]
    counts = scored[scored["ERROR"].isna()]["TYPE"].value_counts().sort_index()
    per_class = _table(["class", "rows"], [[str(k), str(v)] for k, v in counts.items()])
    errors = int(scored["ERROR"].notna().sum())
    summary = (
        f"{len(catalog)} rows in clothing_test: {len(scored)} scored "
        f"({errors} with an error), {len(catalog) - len(scored)} not scored yet"
    )
    return f"{_table(header, rows)}\n\n{per_class}\n\n{summary}"


def predictions(args: argparse.Namespace) -> int:
    """Print the latest scored rows of clothing_test and the per-class counts, read-only."""
    from clothing_assets.environment import open_warehouse

    with open_warehouse(read_only=True) as warehouse:
        print(format_predictions(warehouse.read_catalog("clothing_test"), args.rows))
    return 0


def similar_k(raw: str) -> int:
    """A number of similar images: a whole number from 1 to 50."""
    from clothing_assets.serve.similar import MAX_K

    if not raw.isdigit() or not 1 <= int(raw) <= MAX_K:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number from 1 to {MAX_K}")
    return int(raw)


def format_similar(found: pd.DataFrame) -> str:
    """The nearest cataloged images as a plain-text table, most similar first."""
    rows = [
        [f"{r.SIMILARITY:.4f}", r.STAGE, "" if r.LABEL is None else str(r.LABEL), r.RELATIVE_PATH]
        for r in found.itertuples()
    ]
    return _table(["similarity", "stage", "label", "path"], rows)


def similar(args: argparse.Namespace) -> int:
    """Print the k cataloged images nearest to IMAGE by the champion's embeddings, read-only.
    Exit 1 when IMAGE is not a usable image; 2 without a champion or its embeddings."""
    from clothing_assets.environment import open_registry, open_warehouse
    from clothing_assets.serve.model import LoadedModel
    from clothing_assets.serve.similar import embed_upload
    from clothing_assets.settings import ConfigurationError, setting

    with open_registry(read_only=True) as registry:
        champion, model_bytes = registry.load_champion()
    loaded = LoadedModel.from_bytes(champion["VERSION"], model_bytes)
    max_bytes = setting("CLOTHING_SERVE_MAX_BYTES")
    try:
        if args.image.stat().st_size > max_bytes:
            raise ValueError(f"file exceeds the limit of {max_bytes} bytes")
        vector = embed_upload(loaded, args.image.read_bytes())
    except (OSError, ValueError, RuntimeError) as exc:  # ImageDecodeError is a ValueError
        return fail(f"{args.image}: {str(exc).splitlines()[0]}", 1)
    with open_warehouse(read_only=True) as warehouse:
        found = warehouse.nearest_embeddings(vector, args.k, loaded.version)
    if found.empty:
        raise ConfigurationError(
            f"the warehouse holds no embeddings of the champion {loaded.version}: materialize "
            "image_embeddings (`dagster asset materialize -m clothing_assets.definitions "
            "--select image_embeddings`)"
        )
    print(format_similar(found))
    return 0


def models_promote(args: argparse.Namespace) -> int:
    """Check the version, then run the `promote_model` job (promotion and rescoring) in this
    process, recorded in the Dagster instance (DAGSTER_HOME) so that it shows in the UI."""
    import dagster as dg

    from clothing_assets.definitions import defs
    from clothing_assets.environment import open_registry

    with open_registry(read_only=True) as registry:
        # unknown, deleted, tampered, or against the gate without --force: say so before a run
        registry.promotable(args.version, force=args.force)
    job = defs().resolve_job_def("promote_model")
    config = {"ops": {"champion_model": {"config": {
        "version": args.version, "reason": args.reason, "force": args.force}}}}  # fmt: skip
    selection = None if args.rescore else [dg.AssetKey("champion_model")]
    with _instance() as instance:
        result = job.execute_in_process(
            run_config=config, instance=instance, asset_selection=selection, raise_on_error=False
        )
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        return fail(f"the promote_model run failed: {failures[-1] if failures else ''}", 1)
    rescored = " and rescored the rows other versions scored" if args.rescore else ""
    print(f"{args.version} is the champion{rescored} (run {result.run_id})")
    return 0


def _instance():
    """The Dagster instance of DAGSTER_HOME (the UI's), else a temporary one."""
    import os

    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def build_parser() -> argparse.ArgumentParser:
    """The `clothing-assets` parser: each command sets `func(args) -> exit code`."""
    parser = CommandParser(prog="clothing-assets", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do"
    )
    models = commands.add_parser("models", help="the model registry").add_subparsers(
        dest="models_command", required=True, metavar="ACTION", help="what to do with it"
    )
    listing = models.add_parser("list", help="every version: status, accuracy, rows scored")
    listing.set_defaults(func=models_list)
    promote = models.add_parser("promote", help="make a stored version the champion")
    promote.add_argument("version", help="a version from `clothing-assets models list`")
    promote.add_argument("--reason", default="", help="why, recorded in the registry")
    promote.add_argument(
        "--no-rescore", dest="rescore", action="store_false",
        help="only promote; the next scoring run moves the rows to the new champion",
    )  # fmt: skip
    promote.add_argument(
        "--force", action="store_true",
        help="promote a version the gate rejected or one below CLOTHING_MIN_VAL_ACCURACY; "
        "the override is recorded in the registry",
    )  # fmt: skip
    promote.set_defaults(func=models_promote)
    shown = commands.add_parser(
        "predictions", help="the latest scored rows of clothing_test and the rows per class"
    )
    shown.add_argument(
        "-n", "--rows", type=positive_int, default=20,
        help="how many of the latest scored rows to show",
    )  # fmt: skip
    shown.set_defaults(func=predictions)
    near = commands.add_parser(
        "similar", help="the cataloged images most like IMAGE (by the champion's embeddings)"
    )
    near.add_argument("image", type=Path, help="an image file")
    near.add_argument(
        "-k", type=similar_k, default=8, help="how many similar images to show (1 to 50)"
    )
    near.set_defaults(func=similar)
    add_serve_commands(commands)
    add_label_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `clothing-assets` command; return its exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
