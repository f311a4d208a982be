"""`create_app`: the FastAPI application of ``medmllm serve`` (one model in memory).

    app = create_app("my-model", api_keys="keys.txt", data_dir="serve-data")
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes: ``GET /healthz`` (no key), the OpenAI-compatible API under ``/v1`` (`medmllm.serve.api`),
and, when their modules are installed, the web pages and ratings: ``create_app`` imports
``medmllm.serve.ui`` and ``medmllm.serve.ratings`` if they exist and includes the router each
returns from ``build_router(state)`` (or ``ui_router(state)`` / ``ratings_router(state)``), with
``state`` the `ServerState` below. Their routes protect themselves with ``state.require_api_key``
where they need to.

Logs (logger ``medmllm.serve``): one line per request with a request id, method, route, status,
body sizes and latency; never a header, a query, a body, a file name or any metadata of a study.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from medmllm.errors import MedMLLMError
from medmllm.serve.api import build_router, openai_error
from medmllm.serve.auth import APIKeyAuth, load_key_hashes
from medmllm.serve.engine import EngineConfig, EngineError, GenerationEngine
from medmllm.serve.limits import BodySizeLimitMiddleware, Limits
from medmllm.serve.studies import FeatureCache, StudyStore, UploadError

log = logging.getLogger("medmllm.serve")
OPTIONAL_ROUTERS = ("ui", "ratings")  # modules under medmllm.serve that add routes when present


@dataclass
class ServerState:
    """What every route needs; handed to optional routers (``build_router(state)``)."""

    model_id: str
    model: Any
    processor: Any
    engine: GenerationEngine
    studies: StudyStore
    features: FeatureCache
    auth: APIKeyAuth
    limits: Limits
    data_dir: Path
    created: int = field(default_factory=lambda: int(time.time()))
    require_api_key: Callable = None  # a FastAPI dependency: 401 without a valid ``Authorization: Bearer KEY``


def load_model(model_dir: str | Path, device: str = "cpu", dtype=None):
    """(model, processor) from a folder written by ``save_pretrained`` (model + processor)."""
    import torch
    from transformers import AutoModelForCausalLM

    import medmllm.model  # noqa: F401  (registers the model type with the Auto classes)
    from medmllm.model.processor import MedMLLMProcessor

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MedMLLMError(f"{model_dir}: not a model folder (no config.json); give a folder written by save_pretrained or `medmllm train export`")
    model = AutoModelForCausalLM.from_pretrained(model_dir, **({"dtype": dtype} if dtype is not None else {}))
    model.to(torch.device(device)).eval()
    return model, MedMLLMProcessor.from_pretrained(model_dir)


def model_fingerprint(model_dir: Path) -> str:
    """Names cached visual features: the model's config and its weight files (name, size, mtime)."""
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for weights in sorted(model_dir.glob("*.safetensors")):
        status = weights.stat()
        digest.update(f"{weights.name}:{status.st_size}:{status.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def create_app(
    model_dir: str | Path | None = None,
    *,
    model=None,
    processor=None,
    model_id: str | None = None,
    api_keys: str | Path | list[str] | None = None,
    data_dir: str | Path = "medmllm-serve-data",
    limits: Limits | None = None,
    engine_config: EngineConfig | None = None,
    cors_origins: list[str] | tuple[str, ...] = (),
    device: str = "cpu",
) -> FastAPI:
    """The server application.

    Args:
        model_dir: a saved model folder (`load_model`); or pass ``model`` and ``processor``.
        model_id: the name clients use in ``model`` (default: the folder's name, else "medmllm").
        api_keys: a keys file (`medmllm.serve.auth`), or a list of ``sha256:<hex>`` hashes; None
            turns authentication off (the CLI allows that only on a loopback address).
        data_dir: where studies (and the pages' ratings) are stored.
        limits: body and upload limits (`Limits`).
        engine_config: batching, queue and timeouts (`EngineConfig`).
        cors_origins: origins allowed to call the API from a browser (none by default).
    """
    if model is None:
        if model_dir is None:
            raise MedMLLMError("create_app needs model_dir, or model and processor")
        model, processor = load_model(model_dir, device)
    elif processor is None:
        raise MedMLLMError("create_app: pass the processor with the model")
    limits = limits or Limits()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if api_keys is None:
        auth = APIKeyAuth(None)
    elif isinstance(api_keys, (str, Path)):
        auth = APIKeyAuth(load_key_hashes(api_keys))
    else:
        auth = APIKeyAuth([bytes.fromhex(h.removeprefix("sha256:")) for h in api_keys])
    studies = StudyStore(data_dir, limits)
    fingerprint = model_fingerprint(Path(model_dir)) if model_dir is not None else None  # in-memory models: no disk cache
    features = FeatureCache(studies, fingerprint)
    engine = GenerationEngine(model, processor, engine_config, feature_cache=features)
    state = ServerState(
        model_id=model_id or (Path(model_dir).name if model_dir is not None else "medmllm"),
        model=model, processor=processor, engine=engine, studies=studies, features=features,
        auth=auth, limits=limits, data_dir=data_dir,
    )
    state.require_api_key = _key_dependency(auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="medmllm", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible API for a medical multimodal LLM (see docs/serving.md).")
    app.state.medmllm = state
    _add_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    async def healthz():
        return {"status": "ok", "model": state.model_id}

    app.include_router(build_router(state))
    for name in OPTIONAL_ROUTERS:
        router = _optional_router(name, state)
        if router is not None:
            app.include_router(router)

    app.add_middleware(BodySizeLimitMiddleware, limits=limits)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_RequestLogMiddleware)  # outermost: sees every response, 413s included
    return app


def _optional_router(name: str, state: ServerState):
    try:
        module = importlib.import_module(f"medmllm.serve.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"medmllm.serve.{name}":
            return None
        raise
    build = getattr(module, "build_router", None) or getattr(module, f"{name}_router", None)
    return build(state) if build is not None else None


def _key_dependency(auth: APIKeyAuth) -> Callable:
    async def require_api_key(request: Request) -> None:
        if not auth.enabled:
            return
        key = auth.key_from_header(request.headers.get("authorization"))
        if key is None or not auth.verify(key):
            raise HTTPException(401, "a valid API key is needed: send 'Authorization: Bearer KEY'", headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's ``{"error": {"message", "type", "code"}}``."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        response = openai_error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return openai_error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request"))

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return openai_error(exc.status, str(exc))

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError):
        return openai_error(exc.status, str(exc) or type(exc).__name__)

    @app.exception_handler(MedMLLMError)
    async def user_error(request: Request, exc: MedMLLMError):
        return openai_error(400, str(exc))


class _RequestLogMiddleware:
    """One log line per request: id, method, route, status, bytes in/out, milliseconds.

    The path is logged without its query; study ids in it are random, not patient identifiers.
    Each response carries the id as ``X-Request-ID`` to match complaints with log lines.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:16]
        start = time.perf_counter()
        sizes = {"in": 0, "out": 0, "status": 500}

        async def counting_receive():
            message = await receive()
            sizes["in"] += len(message.get("body", b""))
            return message

        async def logging_send(message):
            if message["type"] == "http.response.start":
                sizes["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                sizes["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, logging_send)
        finally:
            log.info("%s %s %s %d in=%d out=%d %.0fms", request_id, scope["method"], scope["path"], sizes["status"],
                     sizes["in"], sizes["out"], (time.perf_counter() - start) * 1000)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medmllm")
    except PackageNotFoundError:
        return "0"
