"""Hostile data and configuration: paths that leave a stage, hostile identifiers, model files
that would run code, and secrets that must not leak into logs, metadata or SQL."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import pickle
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import fsspec
import pandas as pd
import pytest
import torch
from dagster_duckdb import DuckDBResource

import clothing_assets
import clothing_assets.resources.duckdb_review as duckdb_review_module
import clothing_assets.resources.duckdb_warehouse as duckdb_warehouse_module
from clothing_assets.definitions import all_assets
from clothing_assets.environment import resources_for
from clothing_assets.ml.data import load_images
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.warehouse import InvalidIdentifierError, validate_identifier
from clothing_assets.stage import (
    REFUSED_READ,
    StageResource,
    UnsafePathError,
    list_stage,
    read_bytes,
    stage_file_url,
)
from clothing_assets_tests.support import (
    COLOURS,
    TINY_RUN_CONFIG,
    TINY_TRAINING,
    make_stage,
    materialize,
    metadata_of,
    read_table,
    register_model,
    step_failure,
    write_image,
)

# --- paths that leave the stage ---------------------------------------------------------------


@pytest.fixture
def hostile_stage(tmp_path) -> Path:
    """A stage whose entries try every way out: links to a file and a folder outside, a broken
    link, a FIFO (which would block any reader), a name that is not UTF-8; plus a link that
    stays inside, which is fine."""
    stage, outside = tmp_path / "stage", tmp_path / "outside"
    write_image(stage / "hat" / "ok.jpg", COLOURS["hat"], seed=1)
    write_image(outside / "private.jpg", COLOURS["shoes"], seed=2)
    (stage / "hat" / "link-out.jpg").symlink_to(outside / "private.jpg")
    (stage / "hat" / "link-in.jpg").symlink_to(stage / "hat" / "ok.jpg")
    (stage / "hat" / "relative-out.jpg").symlink_to(Path("..") / ".." / "outside" / "private.jpg")
    (stage / "folder-out").symlink_to(outside, target_is_directory=True)
    (stage / "hat" / "broken.jpg").symlink_to(stage / "hat" / "missing.jpg")
    os.mkfifo(stage / "hat" / "fifo.jpg")
    with open(os.path.join(os.fsencode(stage / "hat"), b"caf\xe9.jpg"), "wb") as handle:
        handle.write(b"latin-1 name")
    return stage


@pytest.mark.timeout(60)  # a FIFO that is opened blocks for ever: fail fast instead
def test_listing_records_every_way_out_of_the_stage_and_reads_none_of_them(hostile_stage):
    listing = list_stage(str(hostile_stage)).set_index("RELATIVE_PATH")
    errors = {k: None if pd.isna(v) else v for k, v in listing["ERROR"].items()}
    assert errors == {
        "folder-out": "symbolic link leads outside the stage; not read",
        "hat/broken.jpg": "broken symbolic link; not read",
        "hat/caf\\xe9.jpg": "file name is not valid UTF-8",
        "hat/fifo.jpg": "not a regular file (FIFO, socket or device); not read",
        "hat/link-in.jpg": None,
        "hat/link-out.jpg": "symbolic link leads outside the stage; not read",
        "hat/ok.jpg": None,
        "hat/relative-out.jpg": "symbolic link leads outside the stage; not read",
    }
    # nothing under the linked folder is listed; the link inside the stage reads its target
    assert not any("private" in p for p in listing.index)
    assert listing.loc["hat/link-in.jpg", "SIZE"] == listing.loc["hat/ok.jpg", "SIZE"]
    # a refused entry is described by the link itself, never by what it points at
    assert (
        listing.loc["hat/link-out.jpg", "SIZE"]
        == os.lstat(hostile_stage / "hat/link-out.jpg").st_size
    )

    base = str(hostile_stage)
    for path in ("hat/link-out.jpg", "hat/relative-out.jpg", "hat/fifo.jpg", "folder-out"):
        assert stage_file_url(base, path) is None, path
    assert stage_file_url(base, "folder-out/private.jpg") is None
    # a link inside the stage is resolved once; the reader is handed the real file
    inner = stage_file_url(base, "hat/link-in.jpg")
    assert inner == os.path.realpath(hostile_stage / "hat" / "ok.jpg")
    assert read_bytes(inner) == (hostile_stage / "hat" / "ok.jpg").read_bytes()
    with pytest.raises(UnsafePathError, match="not read"):
        read_bytes(None)


@pytest.mark.parametrize(
    "path",
    ["../outside/private.jpg", "hat/../../outside/private.jpg", "/etc/passwd", "hat//ok.jpg",
     "./hat/ok.jpg", "", "hat/\x00.jpg"],
)  # fmt: skip
def test_a_relative_path_that_escapes_is_never_joined_to_the_stage(hostile_stage, path):
    assert stage_file_url(str(hostile_stage), path) is None


def test_object_store_keys_with_dot_dot_are_recorded_not_followed():
    # S3, GCS and memory:// keep keys literally: "a/../../x" is a legal key there
    fs = fsspec.filesystem("memory")
    root = f"/stage-{uuid.uuid4().hex}"
    fs.pipe(f"{root}/hat/a.jpg", b"1")
    fs.pipe(f"{root}/hat/../../etc/passwd.jpg", b"2")
    fs.pipe(f"{root}/hat//double.jpg", b"3")
    try:
        listing = list_stage(f"memory://{root}").set_index("RELATIVE_PATH")
    finally:
        fs.rm(root, recursive=True)
    assert pd.isna(listing.loc["hat/a.jpg", "ERROR"])
    assert listing.loc["hat/../../etc/passwd.jpg", "ERROR"].startswith("unsafe path")
    assert listing.loc["hat//double.jpg", "ERROR"].startswith("unsafe path")
    assert stage_file_url(f"memory://{root}", "hat/../../etc/passwd.jpg") is None


def test_a_file_swapped_for_a_link_after_the_listing_is_refused_when_read(tmp_path):
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
    stage = tmp_path / "stage"
    make_stage(stage, 2, classes=("hat", "shoes"))
    warehouse.create_stage("s", str(stage))
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_train", "s")
    paths = warehouse.read_catalog("clothing_train")["RELATIVE_PATH"].tolist()

    outside = write_image(tmp_path / "outside" / "private.jpg", COLOURS["pants"], seed=9)
    (stage / "hat" / "hat_0.jpg").unlink()
    (stage / "hat" / "hat_0.jpg").symlink_to(outside)  # after the listing, before the read

    urls = warehouse.file_urls("s", paths)
    assert urls[paths.index("hat/hat_0.jpg")] is None
    decoded = load_images(urls, 16)
    assert decoded.errors == {paths.index("hat/hat_0.jpg"): REFUSED_READ}
    assert len(decoded.kept) == len(paths) - 1


# --- identifiers from configuration -------------------------------------------------------------

HOSTILE_NAMES = [
    "clothing_dataset; DROP TABLE clothing_test; --",
    "x' OR '1'='1",
    'x"y',
    "clothing dataset",
    "1stage",
    "",
    "stage-name",
    "stäge",
    "a" * 300,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_stage_names_are_refused_before_any_sql(tmp_path, name):
    folder = tmp_path / "never-created"
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(folder / "w.duckdb")))
    calls = [
        lambda: warehouse.create_stage(name, str(tmp_path)),
        lambda: warehouse.refresh_stage(name),
        lambda: warehouse.sync_catalog("clothing_train", name),
        lambda: warehouse.file_urls(name, ["hat/a.jpg"]),
    ]
    for call in calls:
        with pytest.raises(InvalidIdentifierError, match="invalid stage name"):
            call()
    # the warehouse was never opened: not even the folder of its file exists
    assert not folder.exists()


@pytest.mark.parametrize("table", ["clothing_test; DROP TABLE clothing_train", "clothing_stages"])
def test_unknown_catalog_tables_are_refused_before_any_sql(tmp_path, table):
    folder = tmp_path / "never-created"
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(folder / "w.duckdb")))
    with pytest.raises(InvalidIdentifierError, match="unknown catalog table"):
        warehouse.read_catalog(table)
    with pytest.raises(InvalidIdentifierError, match="unknown catalog table"):
        warehouse.sync_catalog(table, "s")
    assert not folder.exists()


@pytest.mark.parametrize("name", ["clothing_dataset", "clothing_dataset_train", "_x", "S3_stage"])
def test_plain_identifiers_are_accepted(name):
    assert validate_identifier(name) == name


def test_a_run_configured_with_a_hostile_stage_name_fails_and_changes_nothing(local_env):
    good = dg.materialize(
        all_assets(), resources=resources_for(), selection=["clothing_dataset", "clothing_test"]
    )
    assert good.success
    resources = resources_for()
    resources["train_stage"] = StageResource(
        name=HOSTILE_NAMES[0], url=str(local_env.train), env_var="CLOTHING_TRAIN_STAGE_URL"
    )
    result = dg.materialize(
        all_assets(),
        resources=resources,
        selection=["clothing_dataset_train", "clothing_train"],
        raise_on_error=False,
    )
    assert not result.success
    error = step_failure(result)
    assert error.cause.cls_name == "InvalidIdentifierError"
    assert "invalid stage name 'clothing_dataset; DROP TABLE" in error.cause.message
    with duckdb.connect(str(local_env.duckdb), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM clothing_test").fetchone()[0] == 9
        assert conn.execute("SELECT list(NAME) FROM clothing_stages").fetchone()[0] == [
            "clothing_dataset"
        ]


# --- model files ---------------------------------------------------------------------------------


class _Exploit:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_file(path: Path, marker: Path, **fields) -> None:
    buffer = io.BytesIO()
    torch.save({**fields, "evil": _Exploit(marker)}, buffer, pickle_module=pickle)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def test_every_torch_load_in_the_package_is_weights_only():
    root = Path(clothing_assets.__file__).parent
    calls = []
    for source in root.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                flags = {k.arg: k.value for k in node.keywords}
                calls.append((source.name, node.lineno))
                assert isinstance(flags.get("weights_only"), ast.Constant), (source, node.lineno)
                assert flags["weights_only"].value is True, (source, node.lineno)
    assert calls  # the check looked at something


def test_model_files_that_would_run_code_are_refused_and_run_nothing(local_env):
    marker = local_env.root / "pwned"
    # a poisoned checkpoint is not resumed from: training starts afresh, nothing runs
    from clothing_assets.defs.assets.model import TrainConfig
    from clothing_assets.ml.data import job_fingerprint, training_rows
    from clothing_assets.ml.durable import checkpoint_file

    assert materialize(["clothing_dataset_train", "clothing_train"], None).success
    rows = training_rows(read_table(local_env, "clothing_train"), 1.0, env_var="-")
    job = job_fingerprint(TrainConfig(**TINY_TRAINING).settings(), rows)
    # the very file the run would resume from, poisoned: refused, training starts afresh
    _evil_file(checkpoint_file(local_env.cache, job), marker, fingerprint=job)
    trained = materialize(["clothing_dataset_train", "clothing_train", "trained_model"])
    assert trained.success
    assert metadata_of(trained, "trained_model")["resumed_from_step"] == 0
    assert not checkpoint_file(local_env.cache, job).exists()  # that run's file: done with
    assert not marker.exists()

    # a poisoned model file made champion fails scoring with a clear message; nothing runs
    _evil_file(local_env.root / "evil.pt", marker, format="clothing-assets/1")
    register_model(local_env, (local_env.root / "evil.pt").read_bytes())
    result = materialize(["clothing_dataset", "clothing_test", "clothing_predictions"], None)
    assert not result.success
    error = step_failure(result)
    assert error.cls_name == "Failure" and "refused the champion's model file" in error.message
    assert "weights_only=True" in error.message
    assert not marker.exists()
    with duckdb.connect(str(local_env.duckdb), read_only=True) as conn:
        assert conn.execute("SELECT count(TYPE) FROM clothing_test").fetchone()[0] == 0


# --- secrets ------------------------------------------------------------------------------------

_TOKENS_SEEN: list[str] = []


class TokenWarehouse(DuckDBWarehouse):
    """The DuckDB warehouse plus an API token, taken the way a hosted warehouse takes its
    password: through dg.EnvVar, resolved by Dagster at run time."""

    api_token: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        _TOKENS_SEEN.append(hashlib.sha256(self.api_token.encode()).hexdigest())


def _strings_in_warehouse(path: Path) -> str:
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return "\n".join(conn.execute(f'SELECT * FROM "{t}"').df().to_string() for t in tables)


def test_a_secret_from_the_environment_appears_in_no_log_metadata_or_sql(
    local_env, monkeypatch, capfd
):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("CLOTHING_TEST_API_TOKEN", secret)
    for name in ("SNOWFLAKE_PASSWORD", "AWS_SECRET_ACCESS_KEY"):  # held by real deployments
        monkeypatch.setenv(name, secret)
    statements: list[str] = []
    real_load_sql = duckdb_warehouse_module.load_sql

    def recording_load_sql(dialect: str, name: str) -> str:
        statements.append(real_load_sql(dialect, name))
        return statements[-1]

    for module in (duckdb_warehouse_module, duckdb_review_module):
        monkeypatch.setattr(module, "load_sql", recording_load_sql)
    resources = resources_for()
    resources["warehouse"] = TokenWarehouse(
        duckdb=DuckDBResource(database=dg.EnvVar("CLOTHING_DUCKDB_PATH")),
        api_token=dg.EnvVar("CLOTHING_TEST_API_TOKEN"),
    )
    _TOKENS_SEEN.clear()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        all_assets(), resources=resources, run_config=TINY_RUN_CONFIG, instance=instance
    )
    assert result.success
    # and a failing run, whose error messages must not carry it either
    monkeypatch.setenv("CLOTHING_TRAIN_STAGE_URL", str(local_env.root / "missing"))
    failed = dg.materialize(
        all_assets(),
        resources=resources,
        selection=["clothing_dataset_train"],
        instance=instance,
        raise_on_error=False,
    )
    assert not failed.success

    # the secret reached the resource at run time ...
    assert _TOKENS_SEEN and set(_TOKENS_SEEN) == {hashlib.sha256(secret.encode()).hexdigest()}
    # ... and appears nowhere a run leaves a trace
    runs = instance.get_runs()
    assert len(runs) == 2
    events = [dg.serialize_value(e) for run in runs for e in instance.all_logs(run.run_id)]
    assert any("dagster/row_count" in e for e in events)  # metadata is in what was searched
    assert not [e for e in events if secret in e]
    assert not [r for r in runs if secret in dg.serialize_value(r)]  # run records and configs
    assert statements and not [s for s in statements if secret in s]
    assert secret not in _strings_in_warehouse(local_env.duckdb)
    captured = capfd.readouterr()
    assert secret not in captured.out and secret not in captured.err
