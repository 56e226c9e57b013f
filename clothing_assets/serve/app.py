"""The FastAPI app: POST /predict, GET /health, GET /model and the page at GET /."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from clothing_assets.ml.images import ImageDecodeError
from clothing_assets.ml.runtime import TORCH
from clothing_assets.serve.batcher import Batcher, InferenceError
from clothing_assets.serve.hosts import TrustedHosts
from clothing_assets.serve.limits import (
    BodyLimits,
    ByteBudget,
    ClientGone,
    Refused,
    check_budget,
    read_body,
    refuse_unread,
)
from clothing_assets.serve.model import LoadedModel
from clothing_assets.serve.runtime import RuntimeSelector
from clothing_assets.serve.similar import NoEmbeddings, SimilarSearch, parse_k
from clothing_assets.serve.source import ModelSource, default_source
from clothing_assets.settings import VARIABLES, setting

# uvicorn configures this logger's handler; the app's messages go out beside its own.
log = logging.getLogger("uvicorn.error")

RAW_TYPES = ("image/jpeg", "image/png", "image/webp")
NO_MODEL = (
    "no champion model to serve yet: materialize trained_model and champion_model "
    "(`dagster asset materialize -m clothing_assets.definitions --select "
    "trained_model,champion_model`) or promote a version (`clothing-assets models promote "
    "VERSION`); the server picks the champion up by itself"
)


@dataclass(frozen=True)
class ServeConfig:
    """The server's knobs; `from_settings()` reads the CLOTHING_SERVE_* variables."""

    # the defaults are the settings' own (settings.VARIABLES), stated there once
    max_bytes: int = VARIABLES["CLOTHING_SERVE_MAX_BYTES"].default
    poll_seconds: float = VARIABLES["CLOTHING_SERVE_POLL_SECONDS"].default
    max_batch_size: int = VARIABLES["CLOTHING_SERVE_MAX_BATCH_SIZE"].default
    max_wait_ms: float = VARIABLES["CLOTHING_SERVE_MAX_WAIT_MS"].default
    workers: int = VARIABLES["CLOTHING_SERVE_WORKERS"].default
    body_timeout: float = VARIABLES["CLOTHING_SERVE_BODY_TIMEOUT_SECONDS"].default
    max_inflight_bytes: int = VARIABLES["CLOTHING_SERVE_MAX_INFLIGHT_BYTES"].default
    discard_bytes: int = VARIABLES["CLOTHING_SERVE_DISCARD_BYTES"].default
    docs: bool = VARIABLES["CLOTHING_SERVE_DOCS"].default
    trusted_hosts: tuple[str, ...] = VARIABLES["CLOTHING_SERVE_TRUSTED_HOSTS"].default

    @classmethod
    def from_settings(cls) -> ServeConfig:
        return cls(
            max_bytes=setting("CLOTHING_SERVE_MAX_BYTES"),
            poll_seconds=setting("CLOTHING_SERVE_POLL_SECONDS"),
            max_batch_size=setting("CLOTHING_SERVE_MAX_BATCH_SIZE"),
            max_wait_ms=setting("CLOTHING_SERVE_MAX_WAIT_MS"),
            workers=setting("CLOTHING_SERVE_WORKERS"),
            body_timeout=setting("CLOTHING_SERVE_BODY_TIMEOUT_SECONDS"),
            max_inflight_bytes=setting("CLOTHING_SERVE_MAX_INFLIGHT_BYTES"),
            discard_bytes=setting("CLOTHING_SERVE_DISCARD_BYTES"),
            docs=setting("CLOTHING_SERVE_DOCS"),
            trusted_hosts=setting("CLOTHING_SERVE_TRUSTED_HOSTS"),
        )

    def __post_init__(self) -> None:
        check_budget(self.max_bytes, self.max_inflight_bytes)

    def body_limits(self) -> BodyLimits:
        return BodyLimits(self.max_bytes, self.body_timeout, self.discard_bytes)

    def threads(self) -> int:
        """Torch threads per server process: the cores this process may use, shared out
        among the worker processes, so that all of them together never exceed the cores."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return max(1, (cores or os.cpu_count() or 1) // max(1, self.workers))


class ModelHolder:
    """The version being served, switched whenever the source names another one, and served
    with the batch path's runtime for it (`selector`; default: torch)."""

    def __init__(self, source: ModelSource, selector: RuntimeSelector | None = None,
                 threads: int = 1) -> None:  # fmt: skip
        self.source, self.selector = source, selector
        self.threads = threads  # an int8 model's ONNX Runtime threads
        self.current: LoadedModel | None = None
        self.rejected: str | None = None  # a version whose bytes failed to load
        self.source_error: str | None = None

    def refresh(self) -> None:
        """Ask the source once; load and switch to a new version, or to the runtime the batch
        path now uses for this one (blocking: run in a thread). A version that fails to load
        is logged once and the previous one stays: a version names its bytes, so the same
        version would fail again."""
        found = self.source.current()
        if found is None or found[0] == self.rejected:
            return
        version, data = found
        current = self.current
        serving = current.runtime if current is not None and current.version == version else None
        runtime, why, int8 = (
            self.selector.choose(version, data, serving) if self.selector else (TORCH, "", None)
        )
        if current is not None and current.version == version and current.runtime == runtime:
            if current.runtime_note != why:
                self.current = dataclasses.replace(current, runtime_note=why)
            return
        try:
            loaded = LoadedModel.from_bytes(
                version, data, int8=int8, note=why, threads=self.threads
            )
        except Exception as exc:  # a bad file must not stop the server
            log.error("model %s could not be loaded, keeping the previous one: %s", version, exc)
            self.rejected = version
            return
        previous, self.current = self.current, loaded
        log.info(
            "serving model %s (%s, %s px) with %s%s%s",
            version,
            loaded.model_file.architecture,
            loaded.model_file.image_size,
            runtime,
            f" ({why})" if why else "",
            f", replacing {previous.version}" if previous else "",
        )

    def missing(self) -> str:
        """Why there is no model to serve: the source's complaint, else what to run."""
        if self.source_error is not None:
            return f"no model to serve: the model source failed: {self.source_error}"
        return NO_MODEL

    async def poll(self, every: float) -> None:
        """Refresh now and then every `every` seconds, until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
                self.source_error = None
            except Exception as exc:  # a source that fails now may answer next time
                if str(exc) != self.source_error:  # once, not at every poll
                    log.error("model source %s failed: %s", type(self.source).__name__, exc)
                self.source_error = str(exc)
            await asyncio.sleep(every)


async def form_file(request: Request, body: bytes) -> bytes:
    """The bytes of the multipart form field `file` in `body`; ValueError when missing."""

    async def stream() -> AsyncIterator[bytes]:
        yield body

    form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValueError("multipart form has no file field named `file`")
        return await upload.read()
    finally:
        await form.close()


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _decode_status(exc: Exception) -> int:
    """415 for what is not an image in a format we open, 422 for a broken or refused one."""
    text = str(exc)
    return 415 if text.startswith(("not an image", "unsupported image format")) else 422


async def _image_bytes(
    request: Request, limits: BodyLimits, budget: ByteBudget, held: list[int]
) -> bytes | Response:
    """The uploaded file's bytes (raw body or form field `file`), or the error answer."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = ctype == "multipart/form-data"
    try:
        if not multipart and ctype not in RAW_TYPES:
            raise refuse_unread(
                request,
                limits,
                415,
                f"unsupported Content-Type {ctype or '(none)'}: send the image as the body with "
                f"{', '.join(RAW_TYPES)}, or as the form field `file` of multipart/form-data",
            )
        body = await read_body(request, limits, budget, held)
        return await form_file(request, body) if multipart else body
    except Refused as refused:
        return refused.response()
    except ClientGone as gone:
        client = f"{request.client.host}:{request.client.port}" if request.client else "?"
        log.info("client %s went away during its upload to %s (%s)", client, request.url.path, gone)
        return Response(status_code=400)  # nobody reads it: the connection is gone
    except (MultiPartException, ValueError) as exc:
        return _error(422, f"bad multipart upload: {exc}")


class LabelProbability(BaseModel):
    """One class and its probability."""

    label: str
    probability: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    """POST /predict's answer: the most likely class, the top three, the version answering."""

    label: str
    confidence: float = Field(ge=0, le=1, description="the probability of `label`")
    top: list[LabelProbability]
    model_version: str


class ErrorDetail(BaseModel):
    """Every error answer: what was wrong and what to do."""

    detail: str


BINARY = {"type": "string", "format": "binary"}
PREDICT_BODY: dict[str, Any] = {
    "required": True,
    "description": "the image: the whole body, with its image type as Content-Type, or the "
    "field `file` of a multipart form",
    "content": {
        **{ctype: {"schema": BINARY} for ctype in RAW_TYPES},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": BINARY}, "required": ["file"]}
        },
    },
}
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail, "description": meaning}
    for status, meaning in {
        408: "the body did not arrive in time",
        413: "the body is over the size limit",
        415: "not an image in a supported format, or an unsupported Content-Type",
        422: "a broken or refused image, or a bad multipart form",
        500: "the model failed",
        503: "no model yet, or the server holds its limit of uploads",
    }.items()
}


def _lifespan(config: ServeConfig, holder: ModelHolder, batcher: Batcher) -> Any:
    """The app's start (threads, batcher, model poller) and stop."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(1)  # every thread but the batcher's forward thread (`ml.threads`)
        batcher.start()
        poller = asyncio.create_task(holder.poll(config.poll_seconds))
        yield
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await batcher.stop()

    return lifespan


def create_app(
    source: ModelSource | None = None,
    config: ServeConfig | None = None,
    similar: SimilarSearch | None = None,
) -> FastAPI:
    """The server of `source` (default: the champion, or CLOTHING_SERVE_MODEL_FILE) with `config`
    (default: CLOTHING_SERVE_*); /similar searches `similar` (default: this environment's)."""
    config = config or ServeConfig.from_settings()
    threads = config.threads()
    holder = ModelHolder(source or default_source(), RuntimeSelector.from_settings(), threads)
    batcher = Batcher(max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
                      decode_threads=threads, forward_threads=threads)  # fmt: skip
    budget = ByteBudget(config.max_inflight_bytes)
    lifespan = _lifespan(config, holder, batcher)
    # the docs pages load their scripts from a public CDN, and the schema maps the surface:
    # both only when asked for
    docs = {} if config.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="clothing-assets model server", lifespan=lifespan, **docs)
    app.add_middleware(TrustedHosts, hosts=config.trusted_hosts)
    page = files("clothing_assets.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> JSONResponse:
        if holder.current is None:
            return _error(503, holder.missing())
        return JSONResponse({"status": "ok", "model_version": holder.current.version})

    @app.get("/model")
    async def model_info() -> JSONResponse:
        if holder.current is None:
            return _error(503, holder.missing())
        batching = {
            "max_batch_size": batcher.max_batch_size,
            "max_wait_ms": batcher.max_wait * 1000,
            "forward_passes": batcher.forwards,
            "images": batcher.images,
        }
        return JSONResponse({**holder.current.info(), "batching": batching})

    @app.post(
        "/predict",
        response_model=Prediction,
        responses=PREDICT_ERRORS,
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def predict(request: Request) -> Any:
        held = [0]  # the body's bytes counted against the budget, given back when answered
        try:
            return await _predict(request, holder, batcher, config, budget, held)
        finally:
            budget.give_back(held)

    add_similar_routes(app, holder, config, budget, similar or SimilarSearch())
    return app


def add_similar_routes(
    app: FastAPI, holder: ModelHolder, config: ServeConfig, budget: ByteBudget,
    search: SimilarSearch,
) -> None:  # fmt: skip
    """POST /similar (the body of /predict, `?k=` from 1 to 50) and GET /thumbnail."""

    @app.post(
        "/similar",
        response_model=SimilarAnswer,
        responses={**PREDICT_ERRORS, 400: {"model": ErrorDetail, "description": "a bad k"}},
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def similar(request: Request) -> Any:
        held = [0]
        try:
            return await _similar(request, holder, config, budget, held, search)
        finally:
            budget.give_back(held)

    @app.get("/thumbnail", responses={404: {"model": ErrorDetail}})
    async def thumbnail(stage: str, path: str) -> Response:
        jpeg = await asyncio.to_thread(search.thumbnail, stage, path)
        if jpeg is None:
            return _error(404, "no such image among the answers of /similar")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})


class SimilarImage(BaseModel):
    """One cataloged image near the uploaded one."""

    path: str
    stage: str = Field(description="'train' or 'test'")
    label: str | None = Field(description="the given label (train) or the prediction (test)")
    similarity: float = Field(description="cosine similarity of the embeddings, -1 to 1")
    thumbnail: str = Field(description="the URL of its thumbnail on this server")


class SimilarAnswer(BaseModel):
    """POST /similar's answer: the nearest cataloged images, most similar first."""

    similar: list[SimilarImage]
    model_version: str


async def _similar(
    request: Request,
    holder: ModelHolder,
    config: ServeConfig,
    budget: ByteBudget,
    held: list[int],
    search: SimilarSearch,
) -> dict[str, Any] | Response:
    loaded = holder.current
    if loaded is None:
        return refuse_unread(request, config.body_limits(), 503, holder.missing()).response()
    try:
        k = parse_k(request.query_params.get("k"))
    except ValueError as exc:
        return refuse_unread(request, config.body_limits(), 400, str(exc)).response()
    data = await _image_bytes(request, config.body_limits(), budget, held)
    if isinstance(data, Response):
        return data
    try:
        found = await asyncio.to_thread(search.search, loaded, data, k)
    except ImageDecodeError as exc:
        return _error(_decode_status(exc), str(exc))
    except NoEmbeddings as exc:
        return _error(503, str(exc))
    except Exception as exc:  # noqa: BLE001 - the warehouse may be busy or away: say so
        log.error("similar-image search failed: %s", exc)
        return _error(503, f"the embeddings could not be searched now: {str(exc)[:200]}")
    for item in found:
        query = urlencode({"stage": item["stage"], "path": item["path"]})
        item["thumbnail"] = f"thumbnail?{query}"  # relative: works behind a path prefix too
    return {"similar": found, "model_version": loaded.version}


async def _predict(
    request: Request,
    holder: ModelHolder,
    batcher: Batcher,
    config: ServeConfig,
    budget: ByteBudget,
    held: list[int],
) -> dict[str, Any] | Response:
    loaded = holder.current  # this request finishes on this version, whatever comes next
    if loaded is None:
        return refuse_unread(request, config.body_limits(), 503, holder.missing()).response()
    data = await _image_bytes(request, config.body_limits(), budget, held)
    if isinstance(data, Response):
        return data
    try:
        probabilities = await batcher.predict(loaded, data)
    except ImageDecodeError as exc:
        return _error(_decode_status(exc), str(exc))
    except InferenceError as exc:
        log.error("%s", exc)
        return _error(500, "the model failed on this request; see the server log")
    except (ValueError, RuntimeError, OSError) as exc:  # decoders' other complaints
        return _error(422, f"unusable image: {str(exc).splitlines()[0][:200]}")
    return loaded.answer(probabilities)


def app_from_settings() -> FastAPI:
    """The uvicorn factory: the app for the trained model file and the settings."""
    return create_app()
