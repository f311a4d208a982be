"""The web pages of ``medmllm serve``: the clinician page and the rating page (docs/serving.md).

    app.include_router(build_router(state))              # in create_app: state is its ServerState
    app.include_router(build_router(data_dir=Path("d")))  # a bare app (tests): no API key, ratings in d/

Plain HTML + JS + CSS under ``static/``, served from here: no build step, no CDN (hospital
networks are closed). Routes:

- ``GET /ui/clinician``, ``GET /ui/rating``: the pages; ``GET /ui/static/NAME``: their files.
- ``GET /ui/api/report-format``, ``POST /ui/api/report/sections`` (API key): P2Med's report prompt
  and sections, taken from `medmllm.data.templates`, for the clinician page.
- ``/ui/api/ratings/...``: sign-in (rater name + password), the items to rate with their outputs
  blinded (no model names, a stable random order per rater and item), item images by item number
  and image number (never by path), and the scores (rater session cookie).

CSRF: the session cookie is HttpOnly and SameSite=Strict, and every POST must be JSON with the
``X-MedMLLM-Request`` header, which a cross-site form cannot send and a cross-site script can
only send after a CORS preflight that this server does not answer.
"""

from __future__ import annotations

import collections
import functools
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medmllm.config_files import describe_validation_error
from medmllm.errors import MedMLLMError
from medmllm.serve.ratings import RUBRIC, Rater, RatingStore

STATIC = Path(__file__).parent / "static"
ASSETS = {"clinician.js": "text/javascript", "rating.js": "text/javascript", "common.js": "text/javascript", "style.css": "text/css"}
PAGES = {"clinician": "clinician.html", "rating": "rating.html"}
SESSION_COOKIE = "medmllm_rater"
REQUEST_HEADER = "X-MedMLLM-Request"  # the custom header every POST of the pages carries (CSRF)
RATINGS_DB_NAME = "ratings.sqlite"  # in the data folder, unless the app names another file
MAX_FAILED_SIGN_INS, SIGN_IN_WINDOW_S = 10, 15 * 60  # then 429 for that name until the oldest failure is 15 minutes old
# The pages load only their own files; images are blob: URLs made from authenticated fetches.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class _SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class _Score(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output: Annotated[int, Field(ge=1, strict=True)]  # the output's place in this rater's order, from 1
    score: Annotated[int, Field(ge=RUBRIC[0][0], le=RUBRIC[-1][0], strict=True)]


class _DraftText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=200_000)  # the model's answer to the report prompt
    impression: str | None = Field(default=None, max_length=200_000)  # its answer to the impression question, if asked


def build_router(state: Any = None, *, data_dir: Path | None = None, api_keys: Any = None, ratings_db: Path | None = None) -> APIRouter:
    """The pages' routes, for ``create_app`` (``state``: its `medmllm.serve.app.ServerState`) or for a
    bare app (the keywords, which win over ``state``'s attributes):

    - ``data_dir``: the server's data folder; the rating database is ``data_dir/ratings.sqlite``
      unless ``ratings_db`` names another file.
    - ``api_keys``: a `medmllm.serve.auth.APIKeyAuth` checked on the clinician page's own endpoints
      (``state.require_api_key`` when the state has it; None and no state: no key needed).
    """
    from medmllm.serve.auth import APIKeyAuth

    data_dir = data_dir if data_dir is not None else getattr(state, "data_dir", None)
    ratings_db = ratings_db if ratings_db is not None else getattr(state, "ratings_db", None)
    if ratings_db is None:
        if data_dir is None:
            raise ValueError("build_router needs data_dir or ratings_db (as keywords or attributes of state)")
        ratings_db = Path(data_dir) / RATINGS_DB_NAME
    store = RatingStore(ratings_db)
    router = APIRouter(include_in_schema=False)

    # ------------------------------------------------------------------------------ dependencies

    # create_app's own API-key check when there is one, so the pages' endpoints answer as the API does
    require_api_key = getattr(state, "require_api_key", None) if api_keys is None else None
    if require_api_key is None:
        auth = api_keys or getattr(state, "auth", None) or APIKeyAuth(None)

        def require_api_key(authorization: str | None = Header(default=None)) -> None:
            if auth.enabled:
                key = auth.key_from_header(authorization)
                if key is None or not auth.verify(key):
                    raise HTTPException(401, "a valid API key is needed (Authorization: Bearer KEY)", headers={"WWW-Authenticate": "Bearer"})

    def require_page_request(request: Request) -> None:
        """CSRF: a POST from the pages is JSON and carries the custom header."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.headers.get(REQUEST_HEADER) != "1" or content_type != "application/json":
            raise HTTPException(403, f"POST requests need Content-Type: application/json and {REQUEST_HEADER}: 1")

    def require_rater(request: Request) -> Rater:
        rater = store.session_rater(request.cookies.get(SESSION_COOKIE))
        if rater is None:
            raise HTTPException(401, "sign in as a rater first")
        return rater

    def item_id_at(n: int) -> str:
        ids = store.item_ids()
        if not 0 <= n < len(ids):
            raise HTTPException(404, f"no item {n}; {len(ids)} item(s) are loaded")
        return ids[n]

    # ------------------------------------------------------------------------- pages and files

    @router.get("/ui")
    @router.get("/ui/")
    def ui_home() -> RedirectResponse:
        return RedirectResponse("/ui/clinician", status_code=307)

    @router.get("/ui/clinician")
    def clinician_page() -> FileResponse:
        return FileResponse(STATIC / PAGES["clinician"], media_type="text/html", headers=SECURITY_HEADERS)

    @router.get("/ui/rating")
    def rating_page() -> FileResponse:
        return FileResponse(STATIC / PAGES["rating"], media_type="text/html", headers=SECURITY_HEADERS)

    @router.get("/ui/static/{name}")
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:  # a fixed list: no path from the client reaches the file system
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    # --------------------------------------------------------------------------- clinician page

    @router.get("/ui/api/report-format", dependencies=[Depends(require_api_key)])
    def report_format() -> dict:
        return report_prompt_parts()

    @router.post("/ui/api/report/sections", dependencies=[Depends(require_page_request), Depends(require_api_key)])
    def report_sections(body: _DraftText) -> dict:
        return structure_report(body.text, body.impression)

    # ------------------------------------------------------------------------------ rating page

    failures: dict[str, collections.deque] = collections.defaultdict(collections.deque)  # name -> times of failed sign-ins

    @router.post("/ui/api/ratings/signin", dependencies=[Depends(require_page_request)])
    def sign_in(body: _SignIn, request: Request, response: Response) -> dict:
        name, now = body.name.strip(), time.monotonic()
        recent = failures[name]
        while recent and recent[0] < now - SIGN_IN_WINDOW_S:
            recent.popleft()
        if len(recent) >= MAX_FAILED_SIGN_INS:
            raise HTTPException(429, f"too many wrong passwords for this name; try again in {SIGN_IN_WINDOW_S // 60} minutes")
        rater = store.verify_password(name, body.password)
        if rater is None:
            recent.append(now)
            if len(failures) > 10_000:  # bounded memory under a flood of made-up names: forget the stale ones
                for stale in [n for n, times in failures.items() if not times or times[-1] < now - SIGN_IN_WINDOW_S]:
                    del failures[stale]
            raise HTTPException(401, "wrong rater name or password")
        failures.pop(name, None)
        token = store.new_session(rater.id)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/ui")
        return {"rater": rater.name}

    @router.post("/ui/api/ratings/signout", dependencies=[Depends(require_page_request)])
    def sign_out(request: Request, response: Response) -> dict:
        store.end_session(request.cookies.get(SESSION_COOKIE))
        response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
        return {"signed_out": True}

    @router.get("/ui/api/ratings/me")
    def me(rater: Rater = Depends(require_rater)) -> dict:
        return {"rater": rater.name}

    @router.get("/ui/api/ratings/items")
    def items(rater: Rater = Depends(require_rater)) -> dict:
        progress = store.progress(rater.id)
        return {"rubric": rubric(), "items": [{"n": n, "rated": done, "outputs": total} for n, (done, total) in enumerate(progress.values())]}

    @router.get("/ui/api/ratings/items/{n}")
    def item(n: int, rater: Rater = Depends(require_rater)) -> dict:
        found = store.item(item_id_at(n))
        scores = store.rater_scores(rater.id, found.id)
        models = store.blinded_models(rater.id, found.id)
        return {
            "n": n, "count": len(store.item_ids()), "task": found.task, "question": found.question, "reference": found.reference,
            "images": [f"/ui/api/ratings/items/{n}/images/{k}" for k in range(len(found.images))],
            "outputs": [{"output": slot, "text": found.outputs[model], "score": scores.get(model)} for slot, model in enumerate(models, 1)],
        }

    @router.get("/ui/api/ratings/items/{n}/images/{k}")
    def item_image(n: int, k: int, rater: Rater = Depends(require_rater)) -> Response:
        found = store.item(item_id_at(n))
        if not 0 <= k < len(found.images):
            raise HTTPException(404, f"item {n} has {len(found.images)} image(s)")
        path = found.images[k]  # a path listed by the admin's items file, never one from the client
        if not path.is_file():
            raise HTTPException(404, "the image file is no longer there")
        name = path.name.lower()
        if name.endswith((".png", ".jpg", ".jpeg")):
            return FileResponse(path, media_type="image/png" if name.endswith(".png") else "image/jpeg", headers={"Cache-Control": "private, no-store"})
        try:
            png = scan_mosaic_png(str(path), path.stat().st_mtime_ns)
        except MedMLLMError:
            raise HTTPException(422, f"image {k} of item {n} cannot be read; check the file the items list names") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-store"})

    @router.post("/ui/api/ratings/items/{n}/ratings", dependencies=[Depends(require_page_request)])
    def rate(n: int, payload: Any = Body(...), rater: Rater = Depends(require_rater)) -> dict:
        # Validated here, not by FastAPI: an invalid score is 422 whatever the app's handler makes of 400s.
        try:
            body = _Score.model_validate(payload)
        except ValidationError as e:
            raise HTTPException(422, describe_validation_error(e, "rating")) from None
        item_id = item_id_at(n)
        models = store.blinded_models(rater.id, item_id)
        if body.output > len(models):
            raise HTTPException(422, f"item {n} has {len(models)} outputs")
        when = store.rate(rater.id, item_id, models[body.output - 1], body.score)
        return {"n": n, "output": body.output, "score": body.score, "time": when}

    return router


def rubric() -> list[dict]:
    """RadFM's 0-5 rating scale as shown on the rating page."""
    return [{"score": score, "name": name, "description": text} for score, name, text in RUBRIC]


@functools.cache
def report_prompt_parts() -> dict:
    """P2Med's report prompt (the paper's, ``p2med/report-ct``'s first) cut at ``{images}``, and its sections."""
    from medmllm.data.templates import FINDINGS, IMPRESSION, get_template
    from medmllm.scans.windows import WINDOWS

    before, _, after = get_template("p2med/report-ct").prompts[0].text.partition("{images}")
    return {
        "before_images": before, "after_images": after, "sections": [FINDINGS, IMPRESSION],
        "impression_question": f"Based on the above, write only the [{IMPRESSION}] of this examination.",
        "windows": {name: {"level": level, "width": width} for name, (level, width) in WINDOWS.items()},
    }


def structure_report(text: str, impression: str | None = None) -> dict:
    """A draft under P2Med's two headings, whatever the model wrote.

    The [Findings] and [Impression] sections of ``text`` (`parse_report`); a missing impression is
    taken from ``impression`` (the answer to a follow-up question, its [Impression] section if it
    has one); text without any heading all goes under Findings. Returns {findings, impression,
    report, needs_impression}: ``needs_impression`` asks the page to ask the model for one.
    """
    from medmllm.data.templates import FINDINGS, IMPRESSION, format_sections, parse_report

    sections = parse_report(text)
    findings, found_impression = sections["findings"], sections["impression"]
    if not findings and not found_impression:
        findings = text.strip()
    if not found_impression and impression is not None:
        found_impression = parse_report(impression)["impression"] or impression.strip()
    return {
        "findings": findings, "impression": found_impression,
        "report": format_sections([(FINDINGS, findings), (IMPRESSION, found_impression)]),
        "needs_impression": not found_impression,
    }


@functools.lru_cache(maxsize=32)
def scan_mosaic_png(path: str, mtime_ns: int) -> bytes:
    """A 3D scan of a rating item as a PNG mosaic of 16 slices (cached by path and modification time)."""
    import io

    from PIL import Image

    from medmllm.scans import read
    from medmllm.scans.preview import mosaic

    buffer = io.BytesIO()
    Image.fromarray(mosaic(read(path))).save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["build_router", "report_prompt_parts", "rubric", "structure_report"]
