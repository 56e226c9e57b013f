"""The `serve` and `predict` commands, for the `clothing-assets` console script and for
`python -m clothing_assets.serve`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clothing_assets.commandline import CommandParser, fail, port_number, run, setting_type
from clothing_assets.serve.limits import check_budget
from clothing_assets.settings import ConfigurationError, setting

if TYPE_CHECKING:
    from clothing_assets.serve.source import ModelSource

NO_MODEL_EXIT = 2


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `serve` and `predict`; each sets `func(args) -> exit code`."""
    serve = subparsers.add_parser("serve", help="start the HTTP model server")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    serve.add_argument(
        "--port", type=port_number, default=8000, help="TCP port to listen on (0: any free one)"
    )
    serve.add_argument(
        "--model", default=None,
        help="serve this model file (CLOTHING_SERVE_MODEL_FILE); default: the champion",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=setting_type("CLOTHING_SERVE_WORKERS"), default=None,
        help="server processes, each with its own model (CLOTHING_SERVE_WORKERS)",
    )  # fmt: skip
    serve.add_argument(
        "--max-batch-size", type=setting_type("CLOTHING_SERVE_MAX_BATCH_SIZE"), default=None,
        help="most images in one forward pass; 1 switches batching off "
        "(CLOTHING_SERVE_MAX_BATCH_SIZE)",
    )  # fmt: skip
    serve.add_argument(
        "--max-wait-ms", type=setting_type("CLOTHING_SERVE_MAX_WAIT_MS"), default=None,
        help="longest a batch waits for requests still being decoded (CLOTHING_SERVE_MAX_WAIT_MS)",
    )  # fmt: skip
    _add_limit_flags(serve.add_argument_group("limits and surface"))
    serve.set_defaults(func=run_serve)
    predict = subparsers.add_parser("predict", help="classify image files, no server needed")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    predict.add_argument(
        "--model", default=None,
        help="a model file (default: CLOTHING_SERVE_MODEL_FILE, else the registry's champion)",
    )  # fmt: skip
    predict.set_defaults(func=run_predict)


def _add_limit_flags(limits: argparse._ArgumentGroup) -> None:
    """The server's limits and surface, each the flag of a CLOTHING_SERVE_* variable."""
    limits.add_argument(
        "--max-bytes", type=setting_type("CLOTHING_SERVE_MAX_BYTES"), default=None,
        help="largest request body; larger ones get a 413 (CLOTHING_SERVE_MAX_BYTES)",
    )  # fmt: skip
    limits.add_argument(
        "--discard-bytes", type=setting_type("CLOTHING_SERVE_DISCARD_BYTES"), default=None,
        help="of a refused body, read and drop up to this much so the client reads the answer "
        "(CLOTHING_SERVE_DISCARD_BYTES)",
    )  # fmt: skip
    limits.add_argument(
        "--max-connections", type=setting_type("CLOTHING_SERVE_MAX_CONNECTIONS"), default=None,
        help="open connections per process; a request beyond them gets a 503 "
        "(CLOTHING_SERVE_MAX_CONNECTIONS)",
    )  # fmt: skip
    limits.add_argument(
        "--header-timeout", metavar="SECONDS", default=None,
        type=setting_type("CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS"),
        help="close a connection whose request head is not in by then "
        "(CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS)",
    )  # fmt: skip
    limits.add_argument(
        "--body-timeout", metavar="SECONDS", default=None,
        type=setting_type("CLOTHING_SERVE_BODY_TIMEOUT_SECONDS"),
        help="a request body not in by then gets a 408 (CLOTHING_SERVE_BODY_TIMEOUT_SECONDS)",
    )  # fmt: skip
    limits.add_argument(
        "--max-inflight-bytes", default=None,
        type=setting_type("CLOTHING_SERVE_MAX_INFLIGHT_BYTES"),
        help="request-body bytes held at once, all requests together; beyond: 503 "
        "(CLOTHING_SERVE_MAX_INFLIGHT_BYTES)",
    )  # fmt: skip
    limits.add_argument(
        "--docs", action="store_const", const="1", default=None,
        help="serve /docs, /redoc and /openapi.json (CLOTHING_SERVE_DOCS; the pages load "
        "scripts from a public CDN)",
    )  # fmt: skip
    limits.add_argument(
        "--trusted-hosts", default=None, metavar="NAMES",
        help="comma-separated Host names to answer, `*.example.com` allowed; others get a 400 "
        "(CLOTHING_SERVE_TRUSTED_HOSTS, default localhost,127.0.0.1,::1)",
    )  # fmt: skip


SERVE_FLAGS = {
    "workers": "CLOTHING_SERVE_WORKERS",
    "max_batch_size": "CLOTHING_SERVE_MAX_BATCH_SIZE",
    "max_wait_ms": "CLOTHING_SERVE_MAX_WAIT_MS",
    "model": "CLOTHING_SERVE_MODEL_FILE",
    "max_bytes": "CLOTHING_SERVE_MAX_BYTES",
    "discard_bytes": "CLOTHING_SERVE_DISCARD_BYTES",
    "max_connections": "CLOTHING_SERVE_MAX_CONNECTIONS",
    "header_timeout": "CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS",
    "body_timeout": "CLOTHING_SERVE_BODY_TIMEOUT_SECONDS",
    "max_inflight_bytes": "CLOTHING_SERVE_MAX_INFLIGHT_BYTES",
    "docs": "CLOTHING_SERVE_DOCS",
    "trusted_hosts": "CLOTHING_SERVE_TRUSTED_HOSTS",
}


def apply_serve_flags(args: argparse.Namespace) -> dict[str, object]:
    """Set the variables the given flags stand for, check every server setting (a bad value
    fails here, before any worker starts), and return uvicorn's options."""
    # The flags reach every worker process (uvicorn starts them afresh) as the settings they
    # override; the app reads only the settings.
    for flag, name in SERVE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[name] = str(value)
    for name in SERVE_FLAGS.values():
        setting(name)
    check_budget(setting("CLOTHING_SERVE_MAX_BYTES"), setting("CLOTHING_SERVE_MAX_INFLIGHT_BYTES"))
    return {
        "workers": setting("CLOTHING_SERVE_WORKERS"),
        "limit_concurrency": setting("CLOTHING_SERVE_MAX_CONNECTIONS"),
        "http": "clothing_assets.serve.protocol:HeadDeadlineProtocol",
    }


def run_serve(args: argparse.Namespace) -> int:
    """Start uvicorn on the app; returns when the server stops."""
    import uvicorn

    options = apply_serve_flags(args)  # a bad value is a ConfigurationError: one `error:` line
    if setting("CLOTHING_SERVE_MODEL_FILE") is None:
        from clothing_assets.environment import check_environment

        check_environment()  # the champion's warehouse: its variables, before a worker starts
    uvicorn.run(
        "clothing_assets.serve.app:app_from_settings",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="info",
        **options,  # type: ignore[arg-type]
    )
    return 0


def _model_source(args: argparse.Namespace) -> tuple[ModelSource, str | None]:
    """The source `predict` uses and how the user named its file (None: the champion). A model
    file named by `--model` or CLOTHING_SERVE_MODEL_FILE has to exist: the server waits for
    one to appear, a single prediction cannot."""
    from clothing_assets.serve.source import FileModelSource, default_source

    source = FileModelSource(args.model) if args.model else default_source()
    if not isinstance(source, FileModelSource):
        return source, None
    named = f"{'--model' if args.model else 'CLOTHING_SERVE_MODEL_FILE'} {str(source.path)!r}"
    if not source.path.is_file():
        why = "is a folder" if source.path.is_dir() else "does not exist"
        raise ConfigurationError(
            f"{named}: the model file {why}; give the path of a model file (a `<version>.pt` "
            "of the model store), or leave it out to use the registry's champion"
        )
    return source, named


def run_predict(args: argparse.Namespace) -> int:
    """Classify each file with the server's code; one line per file. Exit 0: all classified,
    1: some files were not usable images, 2: no model or an unusable one."""
    from clothing_assets.serve.model import LoadedModel

    source, named = _model_source(args)
    found = source.current()
    if found is None:
        from clothing_assets.serve.app import NO_MODEL

        return fail(NO_MODEL, NO_MODEL_EXIT)
    try:
        loaded = LoadedModel.from_bytes(*found)
    except ValueError as exc:  # not a model file
        raise ConfigurationError(f"{named or f'the champion {found[0]}'}: {exc}") from exc
    max_bytes, failed = setting("CLOTHING_SERVE_MAX_BYTES"), 0
    for name in args.images:
        try:
            path = Path(name)
            if path.stat().st_size > max_bytes:
                raise ValueError(f"file exceeds the limit of {max_bytes} bytes")
            image = loaded.decode(path.read_bytes())
        except (OSError, ValueError, RuntimeError) as exc:  # ImageDecodeError is a ValueError
            failed += 1
            print(f"{name}\tERROR\t{str(exc).splitlines()[0]}")
            continue
        answer = loaded.answer(loaded.probabilities([image])[0])
        print(f"{name}\t{answer['label']}\t{answer['confidence']:.4f}\t{loaded.version}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m clothing_assets.serve`: `serve` (the default) or `predict`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "predict", "-h", "--help"):
        argv.insert(0, "serve")
    parser = CommandParser(prog="python -m clothing_assets.serve")
    add_commands(
        parser.add_subparsers(dest="command", required=True, help="serve (the default) or predict")
    )
    return run(parser, argv)
