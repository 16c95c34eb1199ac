"""`userstudy serve`: the 2AFC page and its JSON API (Starlette on uvicorn).

Routes (TOKEN: a rater's secret from `invite`; anything else is 404):

    GET  /s/TOKEN                    the page (static/index.html; 404 for an unknown token)
    GET  /static/{index.css,app.js}  the page's assets (a fixed list: no directory, no client path)
    GET  /api/TOKEN/state            progress and the next trial ({"done", "total", "trial"})
    POST /api/TOKEN/vote             {"presentation": "p0003", "choice": "left"|"right", "rt_ms": int,
                                      "key": idempotency key}; answers after the vote is on disk
    GET  /api/TOKEN/image/ID         an image of the study by its 32-hex content id (STUDY/images only)

Errors are JSON ``{"error": "..."}`` and store nothing: 404 unknown token / trial / image, 409 a
trial already answered (with another key), not the next one, or a key reused; 400 malformed
JSON or fields (unknown fields refused, types strict); 413 a body over ``MAX_BODY`` bytes; 415 not
``application/json``. A repeated request with the same key gets the first answer again
(``"duplicate": true``) and is counted once.

Every response carries a Content-Security-Policy without inline script or style
(``default-src 'none'``; scripts, styles, images and fetches from this origin only),
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (the token is in the URL),
``X-Frame-Options: DENY`` and ``Cache-Control: no-store`` (images: private, immutable).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bench.errors import StudyError
from bench.userstudy import db
from bench.userstudy.design import load

MAX_BODY = 1024
STATIC = Path(__file__).with_name("static")
ASSETS = {"index.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class VoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    presentation: Annotated[str, StringConstraints(pattern=r"^p\d{4,6}$")]
    choice: Literal["left", "right"]
    rt_ms: Annotated[int, Field(ge=0, le=86_400_000)]
    key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class _SecurityHeaders:
    """ASGI middleware: the security headers on every response, errors included."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in HEADERS.items():
                    headers[k] = v
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise HTTPException(413 if length.isdigit() else 400,
                            f"body of {length} bytes; at most {MAX_BODY}" if length.isdigit() else "bad Content-Length")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, f"body over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _parse_vote(raw: bytes) -> VoteBody:
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"body is not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(obj, dict):
        raise HTTPException(400, "body must be a JSON object")
    try:
        return VoteBody.model_validate(obj)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "body"
        raise HTTPException(400, f"field {where}: {e['msg']}") from None


def create_app(study_dir: str | Path) -> Starlette:
    study_dir = Path(study_dir)
    study = load(study_dir)
    db.connect(study_dir).close()  # a clear error now rather than on the first request
    images = study["images"]
    files = {iid: study_dir / "images" / f"{iid}.png" for iid in images}
    absent = [p for p in files.values() if not p.is_file()]
    if absent:
        raise StudyError(f"{study_dir}: {len(absent)} image(s) of study.json are missing, e.g. {absent[0]}")
    page = (STATIC / "index.html").read_bytes()
    assets = {name: (STATIC / name).read_bytes() for name in ASSETS}

    def _rater(token: str):
        con = db.connect(study_dir)
        try:
            return db.rater_of(con, token)
        finally:
            con.close()

    async def home(request: Request) -> Response:
        return PlainTextResponse(f"iqa-study user study '{study['name']}': open the personal link you were given.\n")

    async def rater_page(request: Request) -> Response:
        if await run_in_threadpool(_rater, request.path_params["token"]) is None:
            return PlainTextResponse("This link is not valid (unknown token). Ask the study's organiser for yours.\n",
                                     status_code=404)
        return Response(page, media_type="text/html; charset=utf-8")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            raise HTTPException(404, "no such file")
        return Response(assets[name], media_type=ASSETS[name])

    def _state(token: str):
        con = db.connect(study_dir)
        try:
            rater = db.rater_of(con, token)
            return None if rater is None else db.state(con, rater, images)
        finally:
            con.close()

    async def state(request: Request) -> Response:
        st = await run_in_threadpool(_state, request.path_params["token"])
        return _error(404, "unknown token") if st is None else JSONResponse(st)

    def _vote(token: str, body: VoteBody):
        con = db.connect(study_dir)
        try:
            rater = db.rater_of(con, token)
            if rater is None:
                return _error(404, "unknown token")
            try:
                new = db.record_vote(con, rater, body.presentation, body.choice, body.rt_ms, body.key)
            except db.VoteRejected as exc:
                return _error(exc.status, str(exc))
            return JSONResponse({"ok": True, "duplicate": not new, **db.state(con, rater, images)})
        finally:
            con.close()

    async def vote(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPException(415, "Content-Type must be application/json")
        body = _parse_vote(await _read_body(request))
        return await run_in_threadpool(_vote, request.path_params["token"], body)

    async def image(request: Request) -> Response:
        iid = request.path_params["image_id"]
        if not IMAGE_ID.match(iid) or iid not in files:
            raise HTTPException(404, "unknown image")
        if await run_in_threadpool(_rater, request.path_params["token"]) is None:
            raise HTTPException(404, "unknown token")
        data = await run_in_threadpool(files[iid].read_bytes)
        return Response(data, media_type="image/png", headers={"cache-control": "private, max-age=86400, immutable"})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)  # none; answers the browser's automatic request without an error

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/s/{token}", rater_page, methods=["GET"]),
        Route("/static/{name}", asset, methods=["GET"]),
        Route("/api/{token}/state", state, methods=["GET"]),
        Route("/api/{token}/vote", vote, methods=["POST"]),
        Route("/api/{token}/image/{image_id}", image, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.add_middleware(_SecurityHeaders)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve STUDY until interrupted; prints the address (``--port 0``: a free port, printed)."""
    import uvicorn

    if not 0 <= port <= 65535:
        raise StudyError(f"--port {port}: expected a port in 0..65535 (0: any free port)")
    study = load(study_dir)
    app = create_app(study_dir)
    if not is_loopback(host):
        print(f"WARNING: --host {host} makes the study reachable from other machines: anyone who can reach "
              f"this port and holds a rater link can vote, and nothing is encrypted (no TLS). Serve on a trusted "
              f"network only, or behind an HTTPS reverse proxy.", file=sys.stderr, flush=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StudyError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"serving user study '{study['name']}' ({len(study['trials'])} trials) on http://{shown}:{bound}/ ; "
          f"raters open their links from `iqa-study userstudy invite` (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
