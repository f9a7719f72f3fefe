"""``fgvc serve``: the web demo of a trained run, a FastAPI app served by uvicorn (the ``serve`` extra).

Routes (docs/serve.md): ``GET /`` the page (one HTML file, no external resources, works
offline), ``GET /api/info``, and ``POST /api/predict``, ``/api/explain``, ``/api/attack``,
each taking the image as the multipart form field ``image`` and answering JSON; every
refusal is ``{"error": one sentence}`` with its status (413 over the size limit, 415 not an
image, 422 a bad field). FastAPI's ``max_body_size`` counts the bytes of every upload; ``Guard``
answers before the app runs when a request declares a body over the limit (FastAPI would answer
that one in plain text) or, on a loopback-bound server, names a host other than this machine
(a DNS-rebinding page). Endpoints are plain functions in FastAPI's thread pool; the Predictor
serialises use of the model.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from fgvc.errors import UserError
from fgvc.serve.predictor import TOPK, Predictor, RequestError

MAX_BYTES = 10 * 1024 * 1024  # the largest request body accepted; more is answered 413
DRAIN_BYTES = 64 * 1024 * 1024  # a declared body over the limit but up to max(this, 4 x limit) is read before the 413
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # the Host names a loopback-bound server answers
PAGE = Path(__file__).with_name("page.html").read_text(encoding="utf-8")
NOT_IMAGE_TYPES = ("text/", "application/json", "application/pdf", "application/zip", "audio/", "video/")


def too_large(limit: int) -> str:
    """The 413 sentence (the page's script words its own check the same way)."""
    return f"the upload is larger than the limit of {limit / 2**20:g} MB; send a smaller image"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_name(header: str) -> str:
    """The name part of a Host header, lower case: 'LOCALHOST.:7860' -> 'localhost', '[::1]:80' -> '[::1]'."""
    h = header.strip().lower()
    return (h[:h.find("]") + 1] if h.startswith("[") else h.partition(":")[0]).rstrip(".")


async def drain(receive) -> None:
    """Read and drop a request body. Answering before the body is read and closing makes the kernel reset
    the connection, and a client still sending (Python's urllib, requests) sees "broken pipe", not the 413."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class Guard:
    """ASGI wrapper that refuses, before the app runs: a declared body over ``max_bytes`` (413, after reading
    and dropping a body up to DRAIN_BYTES) and, when ``loopback``, a Host header that is not localhost,
    127.0.0.1 or [::1] (403)."""

    def __init__(self, app, max_bytes: int, loopback: bool, port: int | None = None):
        self.app, self.max_bytes, self.loopback, self.port = app, max_bytes, loopback, port

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            sentence, status = None, 0
            if self.loopback and "host" in headers and host_name(headers["host"]) not in LOOPBACK_HOSTS:
                where = f"http://127.0.0.1:{self.port}/" if self.port else "http://127.0.0.1"
                sentence, status = f"this demo answers only requests addressed to localhost, 127.0.0.1 or [::1]; open {where}", 403
            elif headers.get("content-length", "").isdigit() and int(headers["content-length"]) > self.max_bytes:
                sentence, status = too_large(self.max_bytes), 413
                if int(headers["content-length"]) <= max(DRAIN_BYTES, 4 * self.max_bytes):
                    await drain(receive)
            if sentence:
                await JSONResponse({"error": sentence}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(predictor: Predictor, host: str = "127.0.0.1", max_bytes: int = MAX_BYTES, port: int | None = None):
    """The demo as an ASGI app (FastAPI inside ``Guard``) around a loaded predictor; ``host`` and ``port``
    are where it will listen (a loopback ``host`` turns the Host check on)."""
    # a part without a filename (`curl -F image=<bird.jpg`) arrives as text: up to the body limit, not 1 MB
    app = FastAPI(title="fgvc demo", max_body_size=max_bytes, form_limits={"max_part_size": max_bytes},
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    def request_error(request: Request, exc: RequestError):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException):
        sentence = too_large(max_bytes) if exc.status_code == 413 else str(exc.detail)
        if exc.status_code == 404:
            sentence = f"no page {request.url.path}; the demo serves /, /api/info and POST /api/predict|explain|attack"
        return JSONResponse({"error": sentence}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        field = str(first.get("loc", ["", "?"])[-1])
        if field == "image":
            sentence = "the request has no image; send the file in the multipart form field 'image'"
        else:
            sentence = f"the form field {field!r} is not valid ({first.get('msg', 'bad value')}); check docs/serve.md"
        return JSONResponse({"error": sentence}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    def info():
        return {**predictor.info(), "max_bytes": max_bytes}

    @app.post("/api/predict")
    def predict(image: Annotated[UploadFile | str, File()], topk: Annotated[int, Form(ge=1, le=100)] = TOPK):
        return predictor.predict(read_image(image), topk=topk)

    @app.post("/api/explain")
    def explain(image: Annotated[UploadFile | str, File()], target: Annotated[int | None, Form()] = None):
        return predictor.explain(read_image(image), target=target)

    @app.post("/api/attack")
    def attack(image: Annotated[UploadFile | str, File()], eps: Annotated[str, Form()] = "4/255"):
        return predictor.attack(read_image(image), eps=eps)  # in [0, 1], as `fgvc attack --eps`: 0.0157 or 4/255

    return Guard(app, max_bytes, loopback=is_loopback(host), port=port)


def read_image(upload: UploadFile | str) -> bytes:
    """The uploaded file's bytes; 415 when its declared type is plainly not an image. A part sent without a
    filename is a text field to starlette: its bytes are taken back from the text (``field_bytes``)."""
    if isinstance(upload, str):
        data = field_bytes(upload)
        if data and len(data) <= 256 and data.isascii() and data.decode().isprintable():
            raise RequestError(415, f"the form field 'image' holds the text {upload!r}, not an image; send the "
                                    f"file itself (curl -F image=@{upload.strip() or 'bird.jpg'})")
        return data
    ctype = (upload.content_type or "").lower()
    if ctype.startswith(NOT_IMAGE_TYPES):
        raise RequestError(415, f"{upload.filename or 'the upload'} is {ctype}, not an image; "
                                "send a JPEG, PNG, BMP, GIF or WebP file")
    return upload.file.read()


def field_bytes(text: str) -> bytes:
    """The bytes of a multipart text field as sent. Starlette decodes a field as UTF-8, or as Latin-1 when
    that fails: an image file is never valid UTF-8 (a JPEG starts with 0xFF, a PNG with 0x89), so it comes
    back exactly from Latin-1; text with characters past U+00FF was UTF-8. (Valid UTF-8 text with Latin-1
    letters is ambiguous, but it is no image either way.)"""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0 picks a free port); UserError for a bad host or a busy port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"cannot resolve host {host!r}; use 127.0.0.1 (this machine) or 0.0.0.0 (all interfaces)"
                        ) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use; stop the other server or pick another "
                            f"port with --port (e.g. --port {port + 1})") from None
        if e.errno == errno.EACCES:
            raise UserError(f"no permission to listen on port {port}; ports below 1024 need root, "
                            "pick another with --port") from None
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); check --host and --port") from None
    sock.set_inheritable(True)
    return sock


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 7860, max_bytes: int = MAX_BYTES) -> None:
    """Load the run, then serve the demo with uvicorn until Ctrl-C."""
    import uvicorn

    predictor = Predictor(run_dir)
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {predictor.run_dir} at http://{shown}:{bound_port}/  (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(create_app(predictor, host, max_bytes, bound_port), log_level="warning", access_log=False,
                            timeout_keep_alive=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])  # Ctrl-C: uvicorn finishes open requests, then re-raises it
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("stopped", flush=True)
