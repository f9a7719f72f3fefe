"""``fgvc serve``: a small web demo of a trained run, on the standard library's HTTP server.

``GET /`` is one self-contained HTML page (no external scripts or fonts, so it works
offline) where a user picks or drops an image and sees the top-5 classes and a Grad-CAM
overlay of the top class. ``POST /predict`` takes the image as the raw request body or as
a multipart form field and answers JSON; ``GET /info`` describes the run. The model is
loaded once; one lock serialises inference, so concurrent requests queue instead of
interleaving on the shared model, and a semaphore bounds how many uploads are decoded at
once. No authentication: it binds to 127.0.0.1 by default, and then answers only requests
addressed to localhost (a DNS-rebinding page cannot reach it through its own host name).
"""

from __future__ import annotations

import base64
import errno
import io
import ipaddress
import json
import socket
import sys
import threading
import time
import traceback
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgvc import runs
from fgvc.data.base import read_rgb
from fgvc.data.transforms import eval_transform
from fgvc.errors import ImageTooLarge, UnreadableImage, UserError
from fgvc.explain.cam import gradcam
from fgvc.explain.overlay import overlay

MAX_BYTES = 20 * 1024 * 1024  # the largest upload accepted; more is answered 413
DRAIN_BYTES = 64 * 1024 * 1024  # an oversized body up to max(this, 4 x the limit) is read and discarded
TIMEOUT = 30.0  # seconds a connection may stay silent (headers or body) before it is answered 408 or closed
DECODE_SLOTS = 2  # uploads decoded and transformed at once; the others wait (a decoded image can be ~270 MB)
CHUNK = 64 * 1024
TOPK = 5
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")  # the Host names a loopback-bound server answers


class BadRequest(Exception):
    """A request the client can fix: answered with ``status`` and one JSON sentence."""

    def __init__(self, status: int, sentence: str):
        super().__init__(sentence)
        self.status = status


# the one page of the demo: plain HTML + script, no external resources (works offline)
PAGE = (Path(__file__).with_name("page.html")).read_text(encoding="utf-8")


def too_large(size: int, limit: int) -> str:
    """The 413 sentence for an upload over the limit (the page's script words it the same way)."""
    return f"the upload has {size} bytes, more than the limit of {limit} bytes; send a smaller image"


class Predictor:
    """A run's model and preprocessing, loaded once; ``predict`` is thread-safe."""

    def __init__(self, run_dir: str | Path, decode_slots: int = DECODE_SLOTS):
        self.run_dir = runs.check_run_dir(run_dir)
        self.model, self.class_names = runs.load(self.run_dir)
        self.image_size = runs.load_config(self.run_dir).data.image_size
        # the one evaluation pipeline (fgvc.data.transforms), as `fgvc predict`, eval and training's scores use
        self.transform = eval_transform(self.image_size)
        self.metrics = runs.read_metrics(self.run_dir)
        self.lock = threading.Lock()  # one forward + Grad-CAM at a time: its hooks live on the shared model
        self.decode_slots = threading.BoundedSemaphore(decode_slots)  # bounds the memory of decoded uploads

    def info(self) -> dict:
        return {"run": self.run_dir.resolve().name, "model": getattr(self.model, "name", None),
                "classes": self.class_names, "image_size": self.image_size,
                "test_acc": self.metrics.get("test_acc"), "cam_method": "gradcam"}

    def predict(self, data: bytes, topk: int = TOPK) -> dict:
        """Top-k classes (probabilities in [0, 1]) and PNGs of the model's input crop and its Grad-CAM overlay."""
        x = self._input(data)
        k = max(1, min(topk, len(self.class_names)))
        with self.lock:
            with torch.no_grad():
                probs = self.model(x).softmax(dim=1)[0]
            top = probs.topk(k)
            best = int(top.indices[0])
            try:
                heatmap, note = gradcam(self.model, x, target=best)[0], None
            except UserError as e:  # a model without a usable default layer still predicts
                heatmap, note = None, str(e)
        result = {
            "top": [{"class": self.class_names[i], "index": int(i), "prob": round(float(p), 6)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist())],
            "input_png_base64": _png_base64(x[0].permute(1, 2, 0).numpy()),
            "cam_method": "gradcam",
            "cam_png_base64": None if heatmap is None else _png_base64(overlay(x[0], heatmap, alpha=0.5)),
        }
        if heatmap is not None and not bool(heatmap.any()):
            # all zero: no positive evidence anywhere, or a 1x1 last feature map (inputs of ~32 px)
            note = "the Grad-CAM map is flat: no region stands out at this input size"
        if note:
            result["cam_note"] = note
        return result

    def _input(self, data: bytes) -> torch.Tensor:
        """The model's (1, 3, H, W) input; the full-size decoded image lives only inside a decode slot."""
        with self.decode_slots:
            try:
                # decoded as every path decodes: reduced JPEG scale, EXIF turn, transparency on white
                image = read_rgb(io.BytesIO(data), self.transform.decode_min_side)
            except ImageTooLarge:
                raise BadRequest(413, f"the image has more than {Image.MAX_IMAGE_PIXELS} pixels; "
                                      "send a smaller one") from None
            except UnreadableImage:
                raise BadRequest(400, "the upload is not an image that can be decoded; send a JPEG, PNG, "
                                      "BMP, GIF or WebP file") from None
            return self.transform(image).unsqueeze(0)


def host_allowed(bound_host: str, host_header: str | None) -> bool:
    """False when the server listens on a loopback address and the request names another host.

    A DNS-rebinding page reaches 127.0.0.1 through its own name (``Host: evil.example``);
    a browser always sends Host, so a request without one is no such page and is let through.
    """
    try:
        if not ipaddress.ip_address(bound_host).is_loopback:
            return True
    except ValueError:
        if bound_host != "localhost":
            return True
    if host_header is None:
        return True
    h = host_header.strip().lower()
    name = h[:h.find("]") + 1] if h.startswith("[") else h.partition(":")[0]
    return name.rstrip(".") in LOOPBACK_NAMES


def _png_base64(hwc: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray((np.clip(hwc, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The first file field (or the field named 'image') of a multipart/form-data body."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise BadRequest(400, "the multipart form has no boundary; send the image as the raw request body instead")
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        if sep and (b"filename=" in head or b'name="image"' in head):
            return data[:-2] if data.endswith(b"\r\n") else data
    raise BadRequest(400, "the multipart form has no file field; send the image in a field named 'image'")


class Handler(BaseHTTPRequestHandler):
    server: DemoServer
    server_version = "fgvc-serve"
    timeout = TIMEOUT  # StreamRequestHandler sets it on the socket; setup() takes the server's value
    unread = 0  # body bytes the client announced and this handler has not read yet

    def setup(self):
        self.timeout = self.server.timeout_s
        super().setup()

    def _host_refused(self) -> bool:
        """Answer 403 to a request addressed to another host name than this loopback server's."""
        if host_allowed(self.server.server_address[0], self.headers.get("Host")):
            return False
        port = self.server.server_address[1]
        self._json(403, {"error": f"this demo answers only requests addressed to localhost, 127.0.0.1 or "
                                  f"[::1]; open http://127.0.0.1:{port}/"})
        return True

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if self._host_refused():
            return
        if path in ("/", "/index.html"):
            self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
        elif path == "/info":
            self._json(200, {**self.server.predictor.info(), "max_bytes": self.server.max_bytes})
        elif path == "/predict":
            self._json(405, {"error": "send the image with POST /predict"}, allow="POST")
        else:
            self._json(404, {"error": f"no page {path}; the demo serves /, /info and POST /predict"})

    def do_POST(self):
        try:
            self.unread = max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            self.unread = 0
        try:
            if self._host_refused():
                return
            if self.path.split("?", 1)[0] != "/predict":
                self._json(404, {"error": f"no endpoint POST {self.path}; post images to /predict"})
                return
            try:
                self._json(200, self.server.predictor.predict(self._read_image()))
            except BadRequest as e:
                self._json(e.status, {"error": str(e)})
            except Exception:  # a bug: the client gets one sentence, the console the traceback
                traceback.print_exc(file=sys.stderr)
                self._json(500, {"error": "the server failed on this image; its console shows why"})
        finally:
            self._discard_body()

    def _discard_body(self) -> None:
        """After an answer sent before the body was read (413, 403, 404): read and drop the body, then close.

        Closing a socket with unread data makes the kernel reset the connection, and a client
        still sending (a browser, urllib) then sees "broken pipe" instead of the answer. The
        answer goes first, so a client that waits for it before sending (Expect: 100-continue)
        just closes; draining stops at max(DRAIN_BYTES, 4 x the limit) bytes or after the
        server's timeout in total, whichever comes first.
        """
        left, self.unread = min(self.unread, self.server.drain_bytes), 0
        if left <= 0:
            return
        self.close_connection = True
        deadline = time.monotonic() + self.server.timeout_s
        try:
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:  # the client stalled (timeout) or went away: nothing left to protect
            pass

    def _read_image(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # the chunked body stays unread
            raise BadRequest(411, "chunked uploads are not accepted; send a Content-Length header")
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            raise BadRequest(411, "the request has no valid Content-Length header") from None
        if length > self.server.max_bytes:
            raise BadRequest(413, too_large(length, self.server.max_bytes))  # do_POST drains the body
        body = self._read_body(length)
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            body = multipart_file(body, content_type)
        if not body:
            raise BadRequest(400, "the request has no image; send the image file as the body or as a form field")
        return body

    def _read_body(self, length: int) -> bytes:
        """``length`` bytes of body; 408 when the client goes silent for the server's timeout mid-upload."""
        chunks, got = [], 0
        while got < length:
            try:
                chunk = self.rfile.read1(min(CHUNK, length - got))
            except TimeoutError:
                self.unread, self.close_connection = 0, True  # a stalled client: nothing to drain
                raise BadRequest(408, f"the upload stalled after {got} of {length} bytes (nothing for "
                                      f"{self.server.timeout_s:g} s); send it again") from None
            if not chunk:  # the client closed its side; the answer will most likely go nowhere
                self.unread, self.close_connection = 0, True
                raise BadRequest(400, f"the upload ended after {got} of the {length} bytes its "
                                      "Content-Length announced; send it again")
            chunks.append(chunk)
            got += len(chunk)
            self.unread = length - got
        return b"".join(chunks)

    def _json(self, status: int, data: dict, **headers) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json", **headers)

    def _send(self, status: int, body: bytes, content_type: str, **headers) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name.title(), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        if self.server.log_requests:
            super().log_message(format, *args)


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung client never blocks Ctrl-C

    def __init__(self, address, predictor: Predictor, max_bytes: int = MAX_BYTES, log_requests: bool = True,
                 timeout: float = TIMEOUT, drain_bytes: int | None = None):
        self.predictor, self.max_bytes, self.log_requests = predictor, max_bytes, log_requests
        self.timeout_s = timeout  # per connection; (socketserver's own `timeout` is for handle_request)
        self.drain_bytes = max(DRAIN_BYTES, 4 * max_bytes) if drain_bytes is None else drain_bytes
        super().__init__(address, Handler)

    def handle_error(self, request, client_address):
        # a client that went away or went silent while being answered is its own business
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(run_dir: str | Path, host: str = "127.0.0.1", port: int = 7860, max_bytes: int = MAX_BYTES,
                log_requests: bool = True, timeout: float = TIMEOUT) -> DemoServer:
    """Load the run and bind ``host:port`` (0 picks a free port); UserError for a bad run or a busy port."""
    predictor = Predictor(run_dir)
    try:
        return DemoServer((host, port), predictor, max_bytes=max_bytes, log_requests=log_requests, timeout=timeout)
    except socket.gaierror:
        raise UserError(f"cannot resolve host {host!r}; use 127.0.0.1 (this machine) or 0.0.0.0 (all interfaces)"
                        ) from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use; stop the other server or pick another "
                            f"port with --port (e.g. --port {port + 1})") from None
        if e.errno == errno.EACCES:
            raise UserError(f"no permission to listen on port {port}; ports below 1024 need root, "
                            "pick another with --port") from None
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); check --host and --port") from None


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the demo until Ctrl-C."""
    server = make_server(run_dir, host, port)
    print(f"serving {server.predictor.run_dir} at {server.url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
