"""`clothing-assets`: the model registry from a terminal, and the model server.

clothing-assets models list
clothing-assets models promote VERSION [--reason TEXT] [--no-rescore]
clothing-assets serve [--host 127.0.0.1] [--port 8000] [--workers N]
clothing-assets predict IMAGE...
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

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
    header = [name for name, _ in LIST_COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def models_list(args: argparse.Namespace) -> int:
    from clothing_assets.environment import open_registry

    with open_registry() as registry:
        print(format_models(registry.warehouse.read_models()))
    return 0


def models_promote(args: argparse.Namespace) -> int:
    """Check the version, then run the `promote_model` job (promotion and rescoring) in this
    process, recorded in the Dagster instance (DAGSTER_HOME) so that it shows in the UI."""
    import dagster as dg

    from clothing_assets.definitions import defs
    from clothing_assets.environment import open_registry
    from clothing_assets.resources.model_registry import RegistryError

    with open_registry() as registry:
        try:
            registry.load(args.version)  # unknown, deleted or tampered: say so before any run
        except RegistryError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
    job = defs().resolve_job_def("promote_model")
    config = {"ops": {"champion_model": {"config": {"version": args.version,
                                                   "reason": args.reason}}}}  # fmt: skip
    selection = None if args.rescore else [dg.AssetKey("champion_model")]
    with _instance() as instance:
        result = job.execute_in_process(
            run_config=config, instance=instance, asset_selection=selection, raise_on_error=False
        )
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        print(f"error: the promote_model run failed: {failures[-1] if failures else ''}",
              file=sys.stderr)  # fmt: skip
        return 1
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
    parser = argparse.ArgumentParser(prog="clothing-assets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    models = commands.add_parser("models", help="the model registry").add_subparsers(
        dest="models_command", required=True
    )
    listing = models.add_parser("list", help="every version: status, accuracy, rows scored")
    listing.set_defaults(func=models_list)
    promote = models.add_parser("promote", help="make a stored version the champion")
    promote.add_argument("version")
    promote.add_argument("--reason", default="", help="why, recorded in the registry")
    promote.add_argument(
        "--no-rescore", dest="rescore", action="store_false",
        help="only promote; the next scoring run moves the rows to the new champion",
    )  # fmt: skip
    promote.set_defaults(func=models_promote)
    add_serve_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
