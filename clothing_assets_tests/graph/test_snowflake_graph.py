"""The seven assets, unchanged, on SnowflakeWarehouse (over fakesnow), with the images read
through expiring presigned-style URLs from an HTTP server on 127.0.0.1.

The first URLs minted for each stage are already past their expiry when a worker reads them
(as after a long queue or a long training); the server refuses them with 403, the client mints
fresh URLs for just those files and they are read on the second try. One test image is refused
whatever its URL, and ends with that ERROR after exactly two tries. One training image fails
once with 503, which the reader retries by itself with the same URL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import dagster as dg
import fakesnow

from clothing_assets.definitions import all_assets, all_checks
from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE, resources_with
from clothing_assets.stage import unsafe_reason
from clothing_assets_tests.support import CLASSES, TINY_RUN_CONFIG, WITHOUT_EMBEDDINGS
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)
from clothing_assets_tests.support.presign_server import PresignServer, serve

_SERVERS: dict[int, PresignServer] = {}
_MINTS: dict[tuple[int, str], int] = {}


class PresigningWarehouse(FakesnowWarehouse):
    """Mints URLs of the test server; a stage's first batch of URLs is minted expired."""

    server_port: int

    def _presign(self, cursor: Any, stage: str, url: str, paths: Sequence[str]) -> list[str]:
        assert all(unsafe_reason(p) is None for p in paths)
        server = _SERVERS[self.server_port]
        calls = _MINTS[(self.server_port, stage)] = _MINTS.get((self.server_port, stage), 0) + 1
        expires_at = time.time() + (-1.0 if calls == 1 else 120.0)
        return [server.mint(stage, p, expires_at=expires_at) for p in paths]


def test_graph_on_snowflake_sql_scores_every_image_through_expiring_urls(local_env):
    refused = "pants/pants_1.jpg"
    flaky = "hat/hat_2.jpg"
    server = PresignServer(
        roots={TRAIN_STAGE: local_env.train, TEST_STAGE: local_env.test},
        always_refuse={(TEST_STAGE, refused)},
        flaky={(TRAIN_STAGE, flaky)},
    )
    with serve(server), fakesnow.patch(nop_regexes=NOP_REGEXES):
        _SERVERS[server.port] = server
        warehouse = PresigningWarehouse(
            snowflake=fake_connection(),
            storage_integration="TEST_INTEGRATION",
            server_port=server.port,
        )
        result = dg.materialize(
            [*all_assets(), *all_checks()],
            selection=WITHOUT_EMBEDDINGS,
            resources=resources_with(warehouse),
            run_config=TINY_RUN_CONFIG,
            raise_on_error=False,
        )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        train = warehouse.read_catalog("clothing_train")
        test = warehouse.read_catalog("clothing_test").set_index("RELATIVE_PATH")

    assert len(train) == 6 * len(CLASSES) and train["ERROR"].isna().all()
    assert len(test) == 3 * len(CLASSES)
    scored = test.drop(index=refused)
    assert scored["ERROR"].isna().all() and set(scored["TYPE"]) <= set(CLASSES)
    assert scored["MODEL_VERSION"].notna().all()
    assert "URL refused: HTTP 403" in test.loc[refused, "ERROR"]
    assert "signature" not in test.loc[refused, "ERROR"]  # never the URL itself

    # every file: first URL expired (403), a fresh one read (200); minted per batch
    for path in train["RELATIVE_PATH"]:
        expect = [403, 503, 200] if path == flaky else [403, 200]
        assert server.statuses(TRAIN_STAGE, path)[: len(expect)] == expect, path
    for path in scored.index:
        assert server.statuses(TEST_STAGE, path)[:2] == [403, 200], path
    assert server.statuses(TEST_STAGE, refused) == [403, 403]  # retried once, then recorded
    assert _MINTS[(server.port, TRAIN_STAGE)] >= 2 and _MINTS[(server.port, TEST_STAGE)] >= 2
    assert server.max_in_flight > 1  # reads run concurrently

    [mat] = [
        m.materialization
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string() == "clothing_predictions"
    ]
    assert mat.metadata["rows_with_error"].value == 1
    assert mat.metadata["rows_scored"].value == len(test)
