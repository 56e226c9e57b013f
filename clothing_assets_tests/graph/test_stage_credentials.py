"""A stage URL with credentials (`http://user:token@host/...`) is used to
reach the stage but shown nowhere: not in the run's events, logs or metadata, not in any
warehouse table. A real HTTP server on 127.0.0.1 serves the stage's folder listing."""

from __future__ import annotations

import base64
import functools
import http.server
import threading

import dagster as dg
import duckdb
import pytest

from clothing_assets_tests.support import materialize, metadata_of

SECRET_USER, SECRET_TOKEN = "stageuser", "s3cr3t-t0ken"


class _BasicAuthHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files and folder listings only to a request with the stage's credentials."""

    expected = "Basic " + base64.b64encode(f"{SECRET_USER}:{SECRET_TOKEN}".encode()).decode()
    refused = 0

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            type(self).refused += 1
            self.send_error(401, "credentials required")
            return
        super().do_GET()

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_train_stage(local_env, monkeypatch):
    """The train stage folder served over HTTP behind Basic auth; the train stage URL carries
    user:token."""
    handler = functools.partial(_BasicAuthHandler, directory=str(local_env.train.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address
    url = f"http://{SECRET_USER}:{SECRET_TOKEN}@{host}:{port}/train"
    monkeypatch.setenv("CLOTHING_TRAIN_STAGE_URL", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def _every_table_as_text(path) -> str:
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return "\n".join(str(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)


@pytest.mark.timeout(180)
def test_credentials_in_a_stage_url_appear_in_no_event_log_metadata_or_table(
    local_env, http_train_stage
):
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(
        ["clothing_dataset_train", "clothing_train", "trained_model"], instance=instance
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    # the stage was reached with its real URL: every file listed, catalogued and trained on
    assert metadata_of(result, "clothing_dataset_train")["file_count"] == 18
    assert metadata_of(result, "trained_model")["rows_with_error"] == 0
    assert _BasicAuthHandler.refused == 0
    assert "***@127.0.0.1" in metadata_of(result, "clothing_dataset_train")["location"]

    records = instance.all_logs(result.run_id)
    shown = "\n".join(repr(r) for r in records)
    tables = _every_table_as_text(local_env.duckdb)
    assert "/train/hat/" in tables  # the FILE_URL columns are there, without credentials
    for secret in (SECRET_USER, SECRET_TOKEN):
        assert secret not in shown
        assert secret not in tables


def test_the_observer_message_for_an_unreachable_stage_hides_its_credentials(
    local_env, monkeypatch, capfd
):
    from clothing_assets.defs.sensors import build_stage_observer
    from clothing_assets.environment import resources_for

    monkeypatch.setenv(
        "CLOTHING_TRAIN_STAGE_URL", f"http://{SECRET_USER}:{SECRET_TOKEN}@127.0.0.1:1/train"
    )
    observer = build_stage_observer()
    resources = resources_for()
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={k: resources[k] for k in observer.required_resource_keys},
    ) as context:
        result = observer(context)
    logged = capfd.readouterr().err
    assert "not observed" in logged and "http://***@127.0.0.1:1/train" in logged
    assert SECRET_USER not in logged and SECRET_TOKEN not in logged
    # the test stage is still observed, and nothing recorded names the train stage's secret
    recorded = dg.serialize_value(result.asset_events)
    assert SECRET_USER not in recorded and SECRET_TOKEN not in recorded
