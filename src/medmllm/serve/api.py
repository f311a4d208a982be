"""The OpenAI-compatible routes: chat completions, models, studies (uploads), engine stats.

Formats are documented in docs/serving.md. Every route here needs an API key (the router carries
the dependency); `build_router(state)` is called once by `medmllm.serve.app.create_app`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from medmllm.errors import MedMLLMError, ScanError
from medmllm.serve.engine import IMAGE_PLACEHOLDER, Completion, EngineError, ImageInput, Prompt, SamplingParams, encode_pixels
from medmllm.serve.studies import UploadError

if TYPE_CHECKING:
    from medmllm.serve.app import ServerState

STUDY_URL = "study://"
# DICOM modality codes as P2Med's exam header writes them ("[Examination modality] X-ray").
MODALITY_WORDS = {"CR": "X-ray", "DX": "X-ray", "MG": "mammography", "CT": "CT", "MR": "MRI", "US": "ultrasound", "PT": "PET", "NM": "nuclear medicine"}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that this server uses; others are ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")


def openai_error(status: int, message: str, kind: str | None = None) -> JSONResponse:
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def build_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(state.require_api_key)])

    @router.get("/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(state)]}

    @router.get("/models/{model_id}")
    async def get_model(model_id: str):
        if model_id != state.model_id:
            raise HTTPException(404, f"model {model_id!r} not found; this server serves {state.model_id!r}")
        return _model_card(state)

    @router.post("/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        if body.model != state.model_id:
            raise HTTPException(404, f"model {body.model!r} not found; this server serves {state.model_id!r}")
        params = _sampling_params(body, state)
        with state.engine.preparing():  # a batch forming meanwhile waits for this request
            prompt = await run_in_threadpool(build_prompt, body.messages, state, params.max_tokens)
            handle = state.engine.submit(prompt, params)  # QueueFullError -> 429 by the app's handler
        timeout = state.engine.config.request_timeout_s
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return await _stream(handle, timeout, reply_id, created, state.model_id, include_usage)
        watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
        try:
            completion = await asyncio.wait_for(handle.result(), timeout)
        except asyncio.TimeoutError:
            handle.cancel()
            raise HTTPException(504, f"no answer within {timeout:g} s") from None
        finally:
            watcher.cancel()
        return {
            "id": reply_id, "object": "chat.completion", "created": created, "model": state.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                         "finish_reason": completion.finish_reason, "logprobs": None}],
            "usage": _usage(completion),
        }

    async def upload_study(file: UploadFile, time_field: str | None, series: str | None, modality: str | None) -> dict:
        with tempfile.TemporaryDirectory(prefix="medmllm-in-") as tmp:
            path = Path(tmp) / "upload"  # the client's file name is never used
            await run_in_threadpool(_save_upload, file, path)
            size = path.stat().st_size
            if size == 0:
                raise UploadError(422, "the uploaded file is empty")
            meta = await run_in_threadpool(state.studies.create, path, time=time_field, series=series, modality=modality)
        meta["bytes"] = size
        meta["features_cached"] = await _encode_study(state, meta["id"])
        return meta

    @router.post("/studies")
    async def create_study(
        file: UploadFile = File(..., description="a zipped DICOM series, a DICOM file, NIfTI, PNG or JPEG"),
        exam_time: str | None = Form(None, alias="time", description="exam date (YYYY-MM-DD or YYYY-MM-DD HH:MM); kept only when given"),
        series: str | None = Form(None, description="which series of a multi-series zip, e.g. 'index=1' or 'description=lung'"),
        modality: str | None = Form(None, description="modality code (CT, MR, CR, DX, ...) for files that do not say"),
    ):
        return await upload_study(file, exam_time, series, modality)

    @router.post("/files")
    async def create_file(
        file: UploadFile = File(...),
        purpose: str = Form("user_data"),
        exam_time: str | None = Form(None, alias="time"),
        series: str | None = Form(None),
        modality: str | None = Form(None),
    ):
        """OpenAI's files endpoint shape (``client.files.create``); the file becomes a study."""
        meta = await upload_study(file, exam_time, series, modality)
        return {**meta, "object": "file", "filename": "study", "purpose": purpose, "status": "processed"}

    @router.get("/studies/{study_id}")
    def get_study(study_id: str):
        meta = state.studies.meta(study_id)
        return {**meta, "features_cached": study_id in state.features}

    @router.delete("/studies/{study_id}")
    def delete_study(study_id: str):
        state.studies.delete(study_id)
        state.features.forget(study_id)
        return {"id": study_id, "object": "study", "deleted": True}

    @router.get("/studies/{study_id}/slices/{index}.png", response_class=Response)
    def get_slice(study_id: str, index: int, window: Literal["lung", "mediastinum", "bone", "brain"] | None = Query(None)):
        png = state.studies.slice_png(study_id, index, window)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/engine/stats")
    async def engine_stats():
        return state.engine.stats()

    return router


def _model_card(state: ServerState) -> dict:
    return {"id": state.model_id, "object": "model", "created": state.created, "owned_by": "medmllm"}


def _sampling_params(body: ChatRequest, state: ServerState) -> SamplingParams:
    limit = state.engine.config.max_new_tokens
    max_tokens = body.max_completion_tokens or body.max_tokens or min(256, limit)
    if max_tokens > limit:
        raise HTTPException(400, f"max_tokens {max_tokens} is over this server's limit of {limit}")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise HTTPException(400, "stop takes at most 4 non-empty strings")
    return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, stop=tuple(stop))


def build_prompt(messages: list[ChatMessage], state: ServerState, max_tokens: int) -> Prompt:
    """OpenAI messages -> a `Prompt` (runs in a thread: decodes images, reads studies).

    Content parts: ``text``; ``image_url`` with a ``data:image/png|jpeg;base64,`` URI or
    ``study://<id>``; ``study`` with ``study_id`` and optional ``exam`` (the exam's order, for
    models with an exam embedding). The server never fetches a URL.
    """
    out, images = [], []
    for m, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        if role not in ("system", "user", "assistant"):
            raise HTTPException(400, f"messages[{m}]: role {message.role!r} is not supported (system, user, assistant)")
        if message.content is None or isinstance(message.content, str):
            out.append({"role": role, "content": message.content or ""})
            continue
        parts = []
        for p, part in enumerate(message.content):
            where = f"messages[{m}].content[{p}]"
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise HTTPException(400, f"{where}: a text part needs a string 'text'")
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise HTTPException(400, f"{where}: image_url needs a 'url'")
                if url.startswith(STUDY_URL):
                    parts.append(_study_part(state, url[len(STUDY_URL):], None, images))
                elif url.startswith("data:"):
                    parts.append(_data_uri_part(state, url, where, images))
                else:
                    raise HTTPException(400, f"{where}: only data: URIs and study://ID are accepted; the server fetches no URL")
            elif kind == "study":
                exam = part.get("exam")
                if exam is not None and (not isinstance(exam, int) or isinstance(exam, bool) or exam < 0):
                    raise HTTPException(400, f"{where}: exam must be an integer >= 0")
                parts.append(_study_part(state, part.get("study_id"), exam, images))
            else:
                raise HTTPException(400, f"{where}: type {kind!r} is not supported (text, image_url, study)")
        out.append({"role": role, "content": parts})
    context = getattr(state.model.config.text_config, "max_position_embeddings", None)
    try:  # bad conversations and long prompts fail here, early; counting reads no image (the engine prepares the batch)
        tokens = state.processor.count_tokens(out, add_generation_prompt=True)
    except MedMLLMError as e:
        raise HTTPException(400, str(e)) from None
    if context and tokens > context - max_tokens:
        raise HTTPException(400, f"the prompt has {tokens} tokens; with max_tokens={max_tokens} that is more than the model's context of {context}")
    return Prompt(out, images)


def _study_part(state: ServerState, study_id, exam: int | None, images: list[ImageInput]) -> dict:
    meta = state.studies.meta(study_id)  # UploadError 404 for a bad or unknown id
    features = state.features.get(study_id)
    pixels = None if features is not None else state.processor.image_tensor(state.studies.scan(study_id))
    images.append(ImageInput(features=features, pixels=pixels, cache_key=study_id))
    part = {"type": "image", "image": IMAGE_PLACEHOLDER, "modality": MODALITY_WORDS.get(meta["modality"]), "time": meta.get("time")}
    if exam is not None:
        part["exam_index"] = exam
    return part


def _data_uri_part(state: ServerState, url: str, where: str, images: list[ImageInput]) -> dict:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise HTTPException(400, f"{where}: the data URI must be base64 (data:image/png;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{where}: the data URI is not valid base64") from None
    if not data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        raise UploadError(415, f"{where}: images must be PNG or JPEG")
    from medmllm.scans import read

    with tempfile.TemporaryDirectory(prefix="medmllm-img-") as tmp:
        path = Path(tmp) / "image"
        path.write_bytes(data)
        try:
            scan = read(path)
            pixels = state.processor.image_tensor(scan)
        except ScanError as e:
            raise UploadError(422, f"{where}: the image cannot be read: {e.problem}") from None
    images.append(ImageInput(pixels=pixels))
    return {"type": "image", "image": IMAGE_PLACEHOLDER}


def _save_upload(file: UploadFile, path: Path) -> None:
    file.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(file.file, out, 1 << 20)


async def _encode_study(state: ServerState, study_id: str) -> bool:
    """Compute and cache the study's visual tokens now, so the first chat about it is quick."""
    scan = await run_in_threadpool(state.studies.scan, study_id)
    pixels = await run_in_threadpool(state.processor.image_tensor, scan)
    try:
        await state.engine.call(lambda: state.features.put(study_id, encode_pixels(state.model, [pixels])[0]))
    except EngineError:  # busy or shutting down: the first chat that needs the features computes them
        return False
    return True


def _usage(completion: Completion) -> dict:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


async def _cancel_on_disconnect(request: Request, handle) -> None:
    while True:
        if await request.is_disconnected():
            handle.cancel()
            return
        await asyncio.sleep(0.2)


async def _stream(handle, timeout: float, reply_id: str, created: int, model_id: str, include_usage: bool):
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.

    Errors before the first token (queue timeout) are a normal HTTP error; later ones arrive as
    an ``{"error": ...}`` event (the status line has been sent by then).
    """
    deadline = time.monotonic() + timeout
    events = handle.events()
    try:
        first = await asyncio.wait_for(events.__anext__(), timeout)
    except asyncio.TimeoutError:
        handle.cancel()
        raise HTTPException(504, f"no answer within {timeout:g} s") from None

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        body = {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        return f"data: {json.dumps(body)}\n\n"

    async def body():
        try:
            yield chunk({"role": "assistant", "content": ""})
            event = first
            while not isinstance(event, Completion):
                yield chunk({"content": event})
                event = await asyncio.wait_for(events.__anext__(), max(0.0, deadline - time.monotonic()))
            yield chunk({}, event.finish_reason)
            if include_usage:
                usage = {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                         "choices": [], "usage": _usage(event)}
                yield f"data: {json.dumps(usage)}\n\n"
        except (EngineError, asyncio.TimeoutError) as e:
            message = str(e) or f"no answer within {timeout:g} s"
            yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
        finally:
            handle.cancel()  # the client went away, or we are done: either way the row stops
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
