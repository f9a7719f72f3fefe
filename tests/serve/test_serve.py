"""`fgvc serve`: the API answers like `fgvc predict`, explains and attacks with fgvc's own functions, and
refuses bad uploads with one JSON sentence (FastAPI's TestClient, plus one real uvicorn server)."""

import base64
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc import api, runs
from fgvc.cli import main
from fgvc.data.transforms import load_eval_image
from fgvc.explain import gradcam
from fgvc.explain.overlay import overlay
from fgvc.predict import predict_files
from fgvc.robust.attacks import fgsm
from fgvc.serve import Predictor
from fgvc.serve.predictor import class_label, confidence, dataset_title

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from fgvc.serve.app import MAX_BYTES, PAGE, create_app, too_large  # noqa: E402


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
def predictor(run64):
    return Predictor(run64)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, host="127.0.0.1"), base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture(scope="module")
def image(tiny_synthbirds_root):
    return sorted((tiny_synthbirds_root / "CUB_200_2011" / "images").rglob("*.jpg"))[0]


def upload(path, ctype="image/jpeg"):
    return {"image": (path.name, path.read_bytes(), ctype)}


def decode_png(b64):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.float32) / 255


def refused(reply, status, words):
    assert reply.status_code == status and reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert words in error and "\n" not in error and "Traceback" not in error
    return error


def test_predict_equals_fgvc_predict(client, run64, image):
    expected = predict_files(run64, [image], topk=5)[0]["top"]
    reply = client.post("/api/predict", files=upload(image))
    assert reply.status_code == 200
    top = reply.json()["top"]
    assert [(t["index"], t["class"]) for t in top] == [(t["index"], t["class"]) for t in expected]
    assert np.allclose([t["prob"] for t in top], [t["prob"] for t in expected], atol=1e-5)
    assert len(top) == len(runs.load_class_names(run64))  # 4 classes: the top-5 is all of them
    input_png = decode_png(reply.json()["input_png_base64"])
    assert np.abs(input_png - load_eval_image(image, 64)[0].permute(1, 2, 0).numpy()).max() <= 1.5 / 255


def test_explain_is_the_gradcam_overlay_of_the_top_class_or_the_asked_one(client, run64, image):
    model, names = api.load(run64)
    x = load_eval_image(image, 64)
    best = int(model(x)[0].argmax())
    for target in (None, (best + 1) % len(names)):
        reply = client.post("/api/explain", files=upload(image), data={} if target is None else {"target": target})
        d = reply.json()
        explained = best if target is None else target
        assert reply.status_code == 200 and d["target"] == explained and d["target_class"] == names[explained]
        heat = gradcam(model, x, target=explained)[0]
        assert heat.max() > 0  # a blank map would make the comparison trivial
        assert np.abs(decode_png(d["cam_png_base64"]) - overlay(x[0], heat, alpha=0.5)).max() <= 1.5 / 255
        assert "2x2" in d["cam_note"]  # fgvc explain's small-map warning: 64 px gives resnet18 a 2x2 map
        assert len(d["cam_legend"]) == 11 and d["cam_legend"][0] == "#000080"  # jet, the overlay's colours
    refused(client.post("/api/explain", files=upload(image), data={"target": 9}), 422, "target=9")


def test_attack_is_fgsm_against_the_top_class_and_the_top5_is_the_attacked_images(client, run64, image):
    model, _ = api.load(run64)
    x = load_eval_image(image, 64)
    best = int(model(x)[0].argmax())
    x_adv = fgsm(model, x, torch.tensor([best]), 8 / 255)
    # eps in [0, 1] as `fgvc attack --eps`, adv.eps and fgvc.robust.fgsm take it; 0..255 beside it
    reply = client.post("/api/attack", files=upload(image), data={"eps": str(8 / 255)})
    d = reply.json()
    assert reply.status_code == 200 and d["eps"] == pytest.approx(8 / 255) and d["eps_255"] == pytest.approx(8)
    assert d["linf"] <= 8 / 255 + 1e-5 and d["linf_255"] <= 8 + 1e-3
    same = client.post("/api/attack", files=upload(image), data={"eps": "8/255"}).json()  # as `fgvc attack --eps`
    assert same["eps"] == d["eps"] and same["adv_png_base64"] == d["adv_png_base64"]
    adv_png = decode_png(d["adv_png_base64"])
    assert np.abs(adv_png - x_adv[0].permute(1, 2, 0).numpy()).max() <= 1.5 / 255
    assert np.abs(adv_png - x[0].permute(1, 2, 0).numpy()).max() > 4 / 255  # it did move the pixels
    probs = model(x_adv)[0].softmax(0)
    assert [t["index"] for t in d["top_adv"]] == probs.argsort(descending=True).tolist()
    assert d["top_clean"][0]["index"] == best and d["flipped"] == (d["top_adv"][0]["index"] != best)
    # the attack lowers the probability of the class it attacks
    assert probs[best] < model(x)[0].softmax(0)[best]
    zero = client.post("/api/attack", files=upload(image), data={"eps": "0"}).json()
    assert zero["top_adv"] == zero["top_clean"] and not zero["flipped"] and zero["linf_255"] == 0
    error = refused(client.post("/api/attack", files=upload(image), data={"eps": "8"}), 422, "[0, 1]")
    assert "8/255" in error and "fgvc attack --eps" in error  # a client still sending 0..255 is told the unit
    refused(client.post("/api/attack", files=upload(image), data={"eps": "lots"}), 422, "'lots'")


def test_info_gives_the_largest_eps_in_both_units(client):
    info = client.get("/api/info").json()
    assert info["max_eps"] == pytest.approx(info["max_eps_255"] / 255) and info["max_eps_255"] == 64


def test_uncertain_hint_follows_the_probabilities(client, image):
    assert confidence([{"prob": 0.15}, {"prob": 0.1}])["uncertain"]
    assert confidence([{"prob": 0.55}, {"prob": 0.4}])["uncertain"]  # a close runner-up
    assert confidence([{"prob": 0.9}, {"prob": 0.05}]) == {"uncertain": False, "hint": None}
    d = client.post("/api/predict", files=upload(image)).json()
    assert d["uncertain"] == confidence(d["top"])["uncertain"]
    assert d["uncertain"] == (d["hint"] is not None) and (not d["uncertain"] or "uncertain" in d["hint"])


def test_info_names_the_dataset_and_model_not_the_folder(client, run64):
    info = client.get("/api/info").json()
    assert info["title"] == "Generated birds · ResNet-18" and run64.name not in info["title"]
    assert info["classes"] == runs.load_class_names(run64) and info["image_size"] == 64
    assert info["test_acc"] == runs.read_metrics(run64)["test_acc"] and info["max_bytes"] == MAX_BYTES
    assert dataset_title("cub200", "data/birds50") == "birds50 (CUB layout)"
    assert dataset_title("cub200", "data/CUB_200_2011") == "CUB-200-2011 birds"
    from fgvc.data import DATASETS

    assert all(dataset_title(name, "data") != name for name in DATASETS if name != "folder")  # each has a title
    assert class_label("017.Cardinal_Grosbeak") == "Cardinal Grosbeak (17)" and class_label("tabby") == "tabby"


def test_page_is_self_contained_with_upload_slider_and_legend(client):
    reply = client.get("/")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    text = reply.text
    assert 'type="file"' in text and 'id="drop"' in text and 'id="eps" type="range"' in text and 'id="legend"' in text
    assert "http://" not in text and "https://" not in text  # works offline
    for path in re.findall(r'api\("(/api/\w+)"', PAGE) + ["/api/info"]:
        assert path in ("/api/predict", "/api/explain", "/api/attack", "/api/info")
    if shutil.which("node"):  # the script at least parses
        script = PAGE.split("<script>", 1)[1].split("</script>", 1)[0]
        subprocess.run(["node", "--check", "-"], input=script, text=True, check=True, capture_output=True, timeout=60)


def test_concurrent_requests_get_the_same_answer(predictor, image):
    data = image.read_bytes()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: predictor.explain(data) if i % 2 else predictor.predict(data), range(6)))
    assert len({json.dumps(a["top"]) for a in answers[::2]}) == 1
    # without the model lock Grad-CAM's hooks collide on the shared model and the maps differ
    assert len({a["cam_png_base64"] for a in answers[1::2]}) == 1


@pytest.mark.parametrize("files,status,words", [
    ({"image": ("notes.txt", b"just some text\n", "text/plain")}, 415, "not an image"),
    ({"image": ("fake.png", b"just some text\n", "image/png")}, 415, "cannot be decoded"),
    ({"image": ("empty.jpg", b"", "image/jpeg")}, 400, "empty"),
    ({"picture": ("a.jpg", b"x", "image/jpeg")}, 422, "field 'image'"),
])
def test_bad_uploads_are_refused_with_one_sentence(client, files, status, words):
    for path in ("/api/predict", "/api/explain", "/api/attack"):
        refused(client.post(path, files=files), status, words)


def test_upload_over_the_limit_is_413_whether_announced_or_streamed(client, predictor, image):
    data = bytes(MAX_BYTES + 1)
    error = refused(client.post("/api/predict", files={"image": ("big.jpg", data, "image/jpeg")}), 413, "limit")
    assert error == too_large(MAX_BYTES) == "the upload is larger than the limit of 10 MB; send a smaller image"
    # no Content-Length (chunked): FastAPI's body limit counts the bytes as they come
    with TestClient(create_app(predictor, max_bytes=1000), base_url="http://127.0.0.1") as small:
        reply = small.post("/api/predict", content=iter([b"--b\r\n", bytes(3000)]),
                           headers={"content-type": "multipart/form-data; boundary=b"})
        assert "content-length" not in reply.request.headers
        assert refused(reply, 413, "limit") == too_large(1000)
        # a body at the limit passes
        body = image.read_bytes()
        limit = len(body) + 200  # the multipart framing
        with TestClient(create_app(predictor, max_bytes=limit), base_url="http://127.0.0.1") as fits:
            assert fits.post("/api/predict", files={"image": ("a.jpg", body, "image/jpeg")}).status_code == 200


def test_image_over_the_pixel_limit_is_413(client, image, monkeypatch):
    # the 32x32 test image has 1024 pixels: over 1000 PIL only warns, over 500 it raises; fgvc refuses both
    for limit in (1000, 500):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        refused(client.post("/api/predict", files=upload(image)), 413, f"more than {limit} pixels")
    monkeypatch.undo()
    assert client.post("/api/predict", files=upload(image)).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7860", "127.0.0.1.evil.example", "[::2]:7860"])
def test_other_host_names_are_403_on_a_loopback_server(client, image, host):
    # DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1
    for method, path in [("GET", "/"), ("GET", "/api/info"), ("POST", "/api/predict")]:
        reply = client.request(method, path, headers={"host": host}, files=upload(image) if method == "POST" else None)
        refused(reply, 403, "localhost")


def test_loopback_names_are_served_and_other_bind_addresses_skip_the_check(client, predictor):
    for host in ["localhost", "localhost:7860", "LOCALHOST.:7860", "127.0.0.1:7860", "[::1]:7860"]:
        assert client.get("/api/info", headers={"host": host}).status_code == 200
    with TestClient(create_app(predictor, host="0.0.0.0"), base_url="http://my-laptop.lan") as lan:
        assert lan.get("/api/info").status_code == 200


def test_unknown_path_is_404_json(client):
    refused(client.get("/nope"), 404, "/api/predict")


def test_real_server_answers_over_http_and_refuses_a_big_upload(run64, image):
    """`fgvc serve` as a user starts it: uvicorn on a free port, a real multipart upload, a real 413."""
    proc = subprocess.Popen([sys.executable, "-m", "fgvc", "serve", str(run64), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", proc.stdout.readline()).group(0)
        boundary = "fgvcTestBoundary"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"\r\n'
                f"Content-Type: image/jpeg\r\n\r\n").encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(url + "api/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            top = json.load(r)["top"]
        assert [t["index"] for t in top] == [t["index"] for t in predict_files(run64, [image])[0]["top"]]
        req = urllib.request.Request(url + "api/predict", data=bytes(MAX_BYTES + 1), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        assert err.value.code == 413 and json.load(err.value)["error"] == too_large(MAX_BYTES)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(20)
    assert code == 0 and "stopped" in proc.stdout.read()


def test_missing_serve_extra_is_one_sentence_and_exit_2(tiny_run, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve", str(tiny_run)]) == 2
    err = capsys.readouterr().err
    from fgvc.install import install_command

    assert err.count("\n") == 1 and install_command("serve") in err and "fastapi" in err


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


def _part_without_filename(data: bytes, boundary: str = "fgvcPart") -> dict:
    """What `curl -F image=<bird.jpg` sends: the file's bytes as a form field with no filename."""
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\n').encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    return {"content": body, "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


def test_an_image_sent_as_a_field_without_filename_is_decoded(client, run64, image, tmp_path):
    expected = [t["index"] for t in predict_files(run64, [image])[0]["top"]]
    for path in ("/api/predict", "/api/explain", "/api/attack"):
        reply = client.post(path, **_part_without_filename(image.read_bytes()))
        assert reply.status_code == 200, reply.text
    assert [t["index"] for t in client.post("/api/predict", **_part_without_filename(image.read_bytes())).json()["top"]] \
        == expected
    # bytes that happen to be valid UTF-8 come back exact too, and a field over starlette's 1 MB text limit
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    big = tmp_path / "noise.png"
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > 2**20
    reply = client.post("/api/predict", **_part_without_filename(big.read_bytes()))
    assert reply.status_code == 200, reply.text
    assert decode_png(reply.json()["input_png_base64"]).shape == (64, 64, 3)


def test_text_in_the_image_field_says_to_send_the_file(client):
    # `curl -F image=bird.jpg` (without @ or <) sends the name as text
    error = refused(client.post("/api/predict", **_part_without_filename(b"bird.jpg")), 415, "'bird.jpg'")
    assert "image=@bird.jpg" in error


def test_field_bytes_recovers_what_starlette_decoded():
    from starlette.formparsers import _user_safe_decode  # what the multipart parser does to a text field

    from fgvc.serve.app import field_bytes

    rng = np.random.default_rng(1)
    # binary files (never valid UTF-8: JPEG, PNG, noise), ASCII, and UTF-8 text past U+00FF
    samples = [b"", b"P3 2 1 255 0 0 0 255 255 255", "\u4e2d\u6587".encode(), b"\xe9\xff\x00", b"\xff\xd8\xff\xe0",
               *(rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (50, 5000, 100_000))]
    for data in samples:
        assert field_bytes(_user_safe_decode(data, "utf-8")) == data
