"""Find similar on the model server: POST /similar over real HTTP (uvicorn on 127.0.0.1) against a
real DuckDB warehouse of embeddings, its thumbnails read through the stage reader, and the page
showing them in chromium."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from dagster_duckdb import DuckDBResource
from PIL import Image

from clothing_assets.ml.embeddings import content_sha256, embed_batch
from clothing_assets.ml.images import prepare
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.model_store import file_version
from clothing_assets.serve.app import ServeConfig, create_app
from clothing_assets.serve.model import LoadedModel
from clothing_assets.serve.similar import (
    NoEmbeddings,
    SimilarSearch,
    WarehouseCatalog,
)
from clothing_assets.serve.source import FileModelSource
from clothing_assets_tests.support import COLOURS, make_stage, write_image
from clothing_assets_tests.support.models import tiny_model_bytes
from clothing_assets_tests.support.processes import free_port
from clothing_assets_tests.system.test_serve import CHROMIUM_ARGS, _chromium

STAGES = {"train": "similar_train", "test": "similar_test"}


def embed_catalog(warehouse: DuckDBWarehouse, loaded: LoadedModel, roots: dict[str, Path]):
    """Every cataloged file embedded by `loaded` (in one forward pass, as `embed_upload`
    prepares each), as image_embeddings would store it."""
    todo = [(stage, r, (root / r.RELATIVE_PATH).read_bytes())
            for stage, root in roots.items()
            for r in warehouse.unembedded_rows(stage, loaded.version).itertuples()]  # fmt: skip
    model_file = loaded.model_file
    batch = torch.stack([prepare(data, model_file.cache_size) for _, _, data in todo])
    vectors = embed_batch(loaded.model, model_file.eval_preset()(batch))
    rows = [
        {
            "RELATIVE_PATH": r.RELATIVE_PATH,
            "STAGE": stage,
            "MODEL_VERSION": loaded.version,
            "SIZE": r.SIZE,
            "LAST_MODIFIED": r.LAST_MODIFIED,
            "ETAG": r.ETAG,
            "CONTENT_SHA256": content_sha256(data),
            "EMBEDDING": vector,
            "ERROR": None,
            "EMBEDDED_AT": datetime.now(UTC),
        }  # fmt: skip
        for (stage, r, data), vector in zip(todo, vectors, strict=True)
    ]
    assert warehouse.write_embedding_rows(rows) == len(rows)


class Served:
    """The app in a uvicorn thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = ""):
        headers = {"Content-Type": ctype} if ctype else {}
        request = urllib.request.Request(self.url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers.get("content-type"), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("content-type"), error.read()

    def similar(self, data: bytes, query: str = "") -> tuple[int, dict]:
        status, _, body = self.request("POST", f"/similar{query}", data, "image/jpeg")
        return status, json.loads(body)

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.started and self.request("GET", "/health")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError("the server did not serve a model in time")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def similar_server(tmp_path_factory) -> Iterator[tuple[Served, dict[str, Path], str]]:
    root = tmp_path_factory.mktemp("similar")
    roots = {"train": root / "train", "test": root / "test"}
    make_stage(roots["train"], 2, seed=0)
    make_stage(roots["test"], 1, seed=500)
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(root / "w.duckdb")))
    for stage, table in (("train", "clothing_train"), ("test", "clothing_test")):
        warehouse.create_stage(STAGES[stage], str(roots[stage]))
        warehouse.refresh_stage(STAGES[stage])
        warehouse.sync_catalog(table, STAGES[stage])
    model_bytes = tiny_model_bytes()
    (root / "model.pt").write_bytes(model_bytes)
    version = file_version(model_bytes)
    embed_catalog(warehouse, LoadedModel.from_bytes(version, model_bytes), roots)
    app = create_app(
        FileModelSource(root / "model.pt"),
        ServeConfig(poll_seconds=0.2),
        SimilarSearch(WarehouseCatalog(warehouse, STAGES)),
    )
    served = Served(app)
    try:
        served.wait_serving()
        yield served, roots, version
    finally:
        served.stop()


def test_similar_answers_the_nearest_cataloged_images_with_thumbnails(similar_server):
    served, roots, version = similar_server
    upload = (roots["train"] / "hat" / "hat_1.jpg").read_bytes()
    status, answer = served.similar(upload, "?k=4")
    assert status == 200, answer
    assert answer["model_version"] == version
    found = answer["similar"]
    assert len(found) == 4
    # a cataloged image finds itself first; the rest follow in order of similarity
    assert (found[0]["path"], found[0]["stage"], found[0]["label"]) == ("hat/hat_1.jpg", "train",
                                                                       "hat")  # fmt: skip
    assert found[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    similarities = [f["similarity"] for f in found]
    assert similarities == sorted(similarities, reverse=True)
    for item in found:
        status, ctype, body = served.request("GET", "/" + item["thumbnail"])
        assert status == 200 and ctype == "image/jpeg"
        assert max(Image.open(io.BytesIO(body)).size) <= 160
    status, default = served.similar(upload)
    assert status == 200 and len(default["similar"]) == 8  # k defaults to 8
    status, everything = served.similar(upload, "?k=50")
    assert len(everything["similar"]) == 3 * 2 + 3  # all the catalog holds
    # test images carry their prediction as label: none was scored here
    assert {f["label"] for f in everything["similar"] if f["stage"] == "test"} == {None}


@pytest.mark.parametrize("k", ["0", "51", "-3", "eight", "2.5"])
def test_a_bad_k_is_a_400_that_names_the_range(similar_server, k):
    served, roots, _ = similar_server
    status, answer = served.similar((roots["test"] / "hat" / "hat_0.jpg").read_bytes(), f"?k={k}")
    assert status == 400 and "k must be an integer from 1 to 50" in answer["detail"]


def test_thumbnails_only_for_answered_cataloged_paths(similar_server):
    served, roots, _ = similar_server
    served.similar((roots["train"] / "shoes" / "shoes_0.jpg").read_bytes(), "?k=1")
    # a readable image in the stage's folder that was never cataloged, so never answered
    write_image(roots["train"] / "hat" / "uncataloged.jpg", COLOURS["hat"], seed=5)
    for query in (
        "stage=train&path=hat/uncataloged.jpg",
        "stage=train&path=../test/hat/hat_0.jpg",
        "stage=train&path=/etc/passwd",
        "stage=elsewhere&path=shoes/shoes_0.jpg",
    ):
        status, _, body = served.request("GET", f"/thumbnail?{query}")
        assert status == 404, query
        assert "answers of /similar" in json.loads(body)["detail"]
    assert served.request("GET", "/thumbnail?stage=train&path=shoes/shoes_0.jpg")[0] == 200


def test_an_unusable_upload_is_refused_like_predict(similar_server):
    served, _, _ = similar_server
    status, answer = served.similar(b"this is not a photo")
    assert status == 415 and "not an image" in answer["detail"]


@pytest.mark.timeout(180)
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (.ci/run installs it)")
def test_the_page_shows_similar_thumbnails_under_the_prediction(similar_server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    served, roots, _ = similar_server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(served.url + "/")
            page.set_input_files("#file", str(roots["test"] / "pants" / "pants_0.jpg"))
            page.wait_for_selector("#similar-section:not([hidden])", timeout=30_000)
            page.wait_for_function(
                "[...document.querySelectorAll('#similar img')]"
                ".every((img) => img.complete && img.naturalWidth > 0)",
                timeout=30_000,
            )
            assert page.locator("#similar figure").count() == 8
            first = page.locator("#similar figure").first
            assert first.locator("img").get_attribute("alt") == "pants/pants_0.jpg"
            assert "test" in first.inner_text() and "1.000" in first.inner_text()
            assert page.is_visible("#result")
        finally:
            browser.close()


def test_a_version_without_embeddings_says_what_to_materialize(similar_server):
    """The served model is not the one that embedded the catalog: a 503 that names the asset."""
    _, roots, _ = similar_server
    warehouse = DuckDBWarehouse(
        duckdb=DuckDBResource(database=str(roots["train"].parent / "w.duckdb"))
    )
    other_bytes = tiny_model_bytes(seed=1)
    other = LoadedModel.from_bytes(file_version(other_bytes), other_bytes)
    search = SimilarSearch(WarehouseCatalog(warehouse, STAGES))
    with pytest.raises(NoEmbeddings, match="materialize image_embeddings"):
        search.search(other, (roots["test"] / "hat" / "hat_0.jpg").read_bytes(), 3)


def test_the_servers_catalog_waits_for_a_locked_duckdb_file_only_briefly(local_env):
    from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE
    from clothing_assets.serve.similar import SEARCH_LOCK_WAIT_S, environment_catalog

    catalog = environment_catalog()
    assert catalog.stage_names == {"train": TRAIN_STAGE, "test": TEST_STAGE}
    assert catalog.warehouse.lock_timeout_s == SEARCH_LOCK_WAIT_S
    assert catalog.warehouse.read_only  # the server creates and changes nothing there
    assert catalog.warehouse.duckdb.database == str(local_env.duckdb)
