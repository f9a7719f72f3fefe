"""`fgvc serve`: the web demo answers like `fgvc predict`, explains the top class, and refuses bad input cleanly."""

import base64
import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from fgvc import runs
from fgvc.cli import main
from fgvc.data.base import read_rgb
from fgvc.data.transforms import eval_transform
from fgvc.explain import gradcam
from fgvc.explain.overlay import overlay
from fgvc.predict import predict_files
from fgvc.serve import MAX_BYTES, Predictor, app, make_server
from fgvc.serve.app import DECODE_SLOTS, PAGE, DemoServer, host_allowed, too_large


@pytest.fixture(scope="module")
def run64(tiny_run, tmp_path_factory):
    """The tiny run served at 64 px: resnet18's last feature map is then 2x2, so Grad-CAM has a location."""
    run = tmp_path_factory.mktemp("serve") / tiny_run.name
    shutil.copytree(tiny_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("image_size: 32\n", "image_size: 64\n", 1))
    assert runs.load_config(run).data.image_size == 64
    return run


@pytest.fixture(scope="module")
def server(run64):
    srv = make_server(run64, host="127.0.0.1", port=0, log_requests=False)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@contextmanager
def serving(predictor, **kwargs):
    """Another server on a free port around an already loaded predictor (a small limit, a short timeout)."""
    srv = DemoServer(("127.0.0.1", 0), predictor, log_requests=False, **kwargs)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def raw(srv, data: bytes, timeout: float = 10.0):
    """(status, JSON body or None, seconds) of raw bytes sent to the server, read until it closes."""
    start = time.monotonic()
    with socket.create_connection(srv.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    elapsed = time.monotonic() - start
    if not reply:
        return None, None, elapsed
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else None, elapsed


@pytest.fixture(scope="module")
def image(tiny_synthbirds_root):
    return sorted((tiny_synthbirds_root / "CUB_200_2011" / "images").rglob("*.jpg"))[0]


def request(srv, path, data=None, headers=None):
    """(status, body bytes, content type) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(srv.url.rstrip("/") + path, data=data, headers=headers or {},
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers["Content-Type"]


def multipart(field, filename, data, boundary="----fgvcTestBoundary7MA4YWxk"):
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def decode_png(b64):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.float32) / 255


def test_predict_equals_fgvc_predict_for_raw_and_multipart_uploads(server, run64, image):
    expected = predict_files(run64, [image], topk=5)[0]["top"]
    body, headers = multipart("image", image.name, image.read_bytes())
    for data, hdrs in [(image.read_bytes(), {"Content-Type": "image/jpeg"}), (body, headers)]:
        status, reply, ctype = request(server, "/predict", data, hdrs)
        assert status == 200 and ctype == "application/json"
        top = json.loads(reply)["top"]
        assert [t["index"] for t in top] == [t["index"] for t in expected]
        assert [t["class"] for t in top] == [t["class"] for t in expected]
        assert np.allclose([t["prob"] for t in top], [t["prob"] for t in expected], atol=1e-5)
        assert len(top) == len(runs.load_class_names(run64))  # 4 classes: top-5 is all of them
        assert sum(t["prob"] for t in top) == pytest.approx(1.0, abs=1e-4)


def test_cam_png_is_the_gradcam_overlay_of_the_top_class_at_input_size(server, run64, image):
    status, reply, _ = request(server, "/predict", image.read_bytes())
    d = json.loads(reply)
    assert status == 200 and d["cam_method"] == "gradcam"
    cam_png, input_png = decode_png(d["cam_png_base64"]), decode_png(d["input_png_base64"])
    assert cam_png.shape == input_png.shape == (64, 64, 3) and "cam_note" not in d

    model, _ = runs.load(run64)
    x = eval_transform(64)(read_rgb(image)).unsqueeze(0)
    heat = gradcam(model, x, target=d["top"][0]["index"])[0]
    assert heat.max() > 0  # a blank map would make the comparison below trivial
    assert np.abs(cam_png - overlay(x[0], heat, alpha=0.5)).max() <= 1.5 / 255
    assert np.abs(input_png - x[0].permute(1, 2, 0).numpy()).max() <= 1.5 / 255


def test_concurrent_requests_get_the_same_answer(server, image):
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: request(server, "/predict", image.read_bytes()), range(6)))
    assert all(status == 200 for status, _, _ in replies)
    answers = [json.loads(body) for _, body, _ in replies]
    assert len({json.dumps(d["top"]) for d in answers}) == 1
    # without the inference lock the top-k can still agree while Grad-CAM's hooks collide on the
    # shared model: the map is then dropped with a cam_note, so the maps must agree too
    assert not [d["cam_note"] for d in answers if "cam_note" in d]
    assert answers[0]["cam_png_base64"] and len({d["cam_png_base64"] for d in answers}) == 1


def test_decoding_is_bounded_to_a_few_uploads_at_once(server, image, monkeypatch):
    active, peak, guard = 0, 0, threading.Lock()

    def slow_read_rgb(*args, **kwargs):
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)  # a big image takes a while to decode, and holds its pixels meanwhile
        with guard:
            active -= 1
        return read_rgb(*args, **kwargs)

    monkeypatch.setattr(app, "read_rgb", slow_read_rgb)
    data = image.read_bytes()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: server.predictor.predict(data), range(6)))
    assert len(results) == 6 and 1 <= peak <= DECODE_SLOTS


def test_page_has_the_upload_form_and_no_external_resources(server):
    status, html, ctype = request(server, "/")
    text = html.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert '<form id="form" action="/predict"' in text and 'type="file"' in text and "drop" in text
    assert "http://" not in text and "https://" not in text  # works offline


def test_page_refuses_a_file_over_the_limit_with_the_servers_sentence(server, tmp_path):
    # /info announces the limit; the script checks file.size against it before uploading
    assert json.loads(request(server, "/info")[1])["max_bytes"] == server.max_bytes
    assert "maxBytes = i.max_bytes" in PAGE and "file.size > maxBytes" in PAGE
    template = re.search(r"`(the upload has \$\{file\.size\}[^`]*)`", PAGE).group(1)
    assert template.replace("${file.size}", "5000000").replace("${maxBytes}", "1000") == too_large(5000000, 1000)
    if shutil.which("node"):  # the script at least parses
        script = tmp_path / "page.js"
        script.write_text(PAGE.split("<script>", 1)[1].split("</script>", 1)[0])
        subprocess.run(["node", "--check", str(script)], check=True, capture_output=True, timeout=60)


def test_info_describes_the_run(server, run64):
    status, reply, _ = request(server, "/info")
    info = json.loads(reply)
    assert status == 200
    assert info["run"] == run64.name and info["image_size"] == 64 and info["model"] == "resnet18"
    assert info["classes"] == runs.load_class_names(run64)
    assert info["test_acc"] == runs.read_metrics(run64)["test_acc"]


def test_a_flat_map_says_so(tiny_run, image):
    # at 32 px resnet18's last feature map is 1x1: nothing to localise, and the reply says why
    d = Predictor(tiny_run).predict(image.read_bytes())
    assert "flat" in d["cam_note"] and decode_png(d["cam_png_base64"]).shape == (32, 32, 3)


@pytest.mark.parametrize("data,headers", [
    (b"just some text, not a picture\n", {"Content-Type": "text/plain"}),
    (b"", {}),
    multipart("image", "notes.txt", b"hello"),
])
def test_non_image_upload_is_400_with_one_json_sentence(server, data, headers):
    status, reply, ctype = request(server, "/predict", data, headers)
    assert status == 400 and ctype == "application/json"
    error = json.loads(reply)["error"]
    assert error and "\n" not in error and "Traceback" not in error


def test_upload_over_the_limit_is_413(server, image, monkeypatch):
    # the default limit, announced by Content-Length: answered before any body byte is read, so a
    # client that waits for an answer before sending (Expect: 100-continue) gets it at once
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", str(MAX_BYTES + 1))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "limit" in json.loads(r.read())["error"]
    conn.close()
    # a real body one byte over a small limit; a body at the limit still passes
    data = image.read_bytes()
    monkeypatch.setattr(server, "max_bytes", len(data) - 1)
    assert request(server, "/predict", data)[0] == 413
    monkeypatch.setattr(server, "max_bytes", len(data))
    assert request(server, "/predict", data)[0] == 200


def test_upload_megabytes_over_a_small_limit_still_gets_its_413(server):
    # the server reads and drops the body before closing: closing with unread data resets the
    # connection, and the client (a browser, urllib) saw "broken pipe" instead of this answer
    data = bytes(8 * 1024 * 1024)
    with serving(server.predictor, max_bytes=1000) as small:
        for _ in range(2):
            status, reply, ctype = request(small, "/predict", data, {"Content-Type": "image/jpeg"})
            assert status == 413 and ctype == "application/json"
            assert json.loads(reply) == {"error": too_large(len(data), 1000)}
        body, headers = multipart("image", "huge.jpg", data)
        status, reply, _ = request(small, "/predict", body, headers)
        assert status == 413 and json.loads(reply)["error"] == too_large(len(body), 1000)


def test_stalled_upload_is_408_and_a_silent_connection_is_closed(server):
    with serving(server.predictor, timeout=0.5) as srv:
        # the body stops after 10 of the announced 500 bytes
        status, reply, elapsed = raw(srv, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          b"Content-Length: 500\r\n\r\n" + bytes(10))
        assert status == 408 and "10 of 500 bytes" in reply["error"] and elapsed < 5
        # headers that never end: closed without an answer
        status, reply, elapsed = raw(srv, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert status is None and elapsed < 5
        # over the limit and then silent: answered at once, and the drain gives up after the timeout
        status, reply, elapsed = raw(srv, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          b"Content-Length: %d\r\n\r\n" % (MAX_BYTES + 1))
        assert status == 413 and "limit" in reply["error"] and elapsed < 5


@pytest.mark.parametrize("head,words", [
    (b"", "no valid Content-Length"),
    (b"Content-Length: many\r\n", "no valid Content-Length"),
    (b"Content-Length: -5\r\n", "no valid Content-Length"),
    (b"Transfer-Encoding: chunked\r\n", "chunked"),
])
def test_upload_without_a_content_length_is_411(server, head, words):
    body = b"5\r\nhello\r\n0\r\n\r\n" if b"chunked" in head else b""
    status, reply, _ = raw(server, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n" + body)
    assert status == 411 and words in reply["error"] and "\n" not in reply["error"]


def test_image_over_the_pixel_limit_is_413(server, image, monkeypatch):
    # the 32x32 test image has 1024 pixels: over the limit of 1000 PIL only warns, over 500 it raises
    for limit in (1000, 500):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        status, reply, _ = request(server, "/predict", image.read_bytes())
        assert status == 413 and json.loads(reply) == {
            "error": f"the image has more than {limit} pixels; send a smaller one"}
    monkeypatch.undo()
    assert request(server, "/predict", image.read_bytes())[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost.evil.example", "[::2]:{port}"])
def test_other_host_names_are_403_on_a_loopback_server(server, image, host):
    # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1
    headers = {"Host": host.format(port=server.server_address[1])}
    for path, data in [("/info", None), ("/", None), ("/predict", image.read_bytes())]:
        status, reply, ctype = request(server, path, data, headers)
        assert status == 403 and ctype == "application/json"
        error = json.loads(reply)["error"]
        assert "localhost" in error and "\n" not in error


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "LOCALHOST.:{port}", "127.0.0.1:{port}",
                                  "[::1]:{port}"])
def test_loopback_host_names_are_served(server, host):
    headers = {"Host": host.format(port=server.server_address[1])}
    assert request(server, "/info", headers=headers)[0] == 200


def test_host_check_applies_only_to_loopback_servers():
    assert host_allowed("127.0.0.1", None)  # no Host header: not a browser, so not a rebinding page
    assert not host_allowed("127.0.0.1", "evil.example")
    assert host_allowed("0.0.0.0", "evil.example") and host_allowed("192.168.1.5", "my-laptop.lan:7860")


def test_unknown_path_is_404_json(server):
    status, reply, _ = request(server, "/nope")
    assert status == 404 and "error" in json.loads(reply)


def test_bad_run_dir_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "run directory" in err


def test_busy_port_names_the_port_and_the_fix(tiny_run, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port}" in err and "--port" in err


def test_serve_command_prints_the_url_and_stops_cleanly_on_ctrl_c(tiny_run, monkeypatch, capsys):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(DemoServer, "serve_forever", interrupted)
    assert main(["serve", str(tiny_run), "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:" in out and "stopped" in out
