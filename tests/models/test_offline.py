"""Pretrained weights without a network: fgvc fails in seconds (no hub retries) and names the
repository, file and folder; with a host it downloads (a local server stands in for the hub).
Nothing here touches the network: unreachable hosts are closed ports on 127.0.0.1."""

import hashlib
import http.server
import socket
import threading
import time

import huggingface_hub
import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file

from fgvc.clip.models import load_clip
from fgvc.errors import UserError
from fgvc.models import create_model, hub
from fgvc.models.factory import TORCHVISION_MODELS

REPO = "timm/test_vit.r160_in1k"  # test_vit's pretrained_cfg: weights on the hub, model.safetensors first
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_endpoint(monkeypatch, url):
    """What HF_ENDPOINT=url sets when huggingface_hub is imported."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def hf(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path and an endpoint that refuses connections."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    set_endpoint(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def no_download(*args, **kwargs):
    raise AssertionError("a download was tried without a reachable host")


def test_reachable_answers_within_its_timeout(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.reachable(f"http://127.0.0.1:{server.getsockname()[1]}/x")
    assert not hub.reachable(f"http://127.0.0.1:{closed_port()}/x")

    released = threading.Event()

    def hangs(*args, **kwargs):  # a network that drops packets: connect() would wait for minutes
        released.wait(30)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hangs)
    start = time.perf_counter()
    try:
        assert not hub.reachable("https://huggingface.co", timeout=0.5)
        assert time.perf_counter() - start < 2
    finally:
        released.set()


def test_timm_weights_offline_fail_fast_naming_repository_file_and_folder(hf, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_download)
    start = time.perf_counter()
    with pytest.raises(UserError) as e:
        create_model("test_vit", 3, pretrained=True, image_size=32)
    assert time.perf_counter() - start < 10  # the hub's retries alone take about 45 s
    message = str(e.value)
    assert REPO in message and "model.safetensors" in message and "cannot be reached" in message
    assert str(hf / "models--timm--test_vit.r160_in1k") in message and "model.pretrained=false" in message


def test_hf_hub_offline_is_named(hf, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=r"HF_HUB_OFFLINE is set.*timm/test_vit\.r160_in1k"):
        create_model("test_vit", 3, pretrained=True, image_size=32)


def source_weights(path):
    torch.manual_seed(1)
    source = timm.create_model("test_vit", pretrained=False)  # as published: 1000 ImageNet classes, 160 px
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    return source


def test_cached_timm_weights_load_without_the_network(hf, tmp_path, monkeypatch):
    snapshot = hf / "models--timm--test_vit.r160_in1k" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (hf / "models--timm--test_vit.r160_in1k" / "refs").mkdir()
    (hf / "models--timm--test_vit.r160_in1k" / "refs" / "main").write_text(COMMIT)
    source = source_weights(snapshot / "model.safetensors")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    model = create_model("test_vit", 3, pretrained=True, image_size=160)
    assert torch.equal(model.net.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model.head.out_features == 3
    from fgvc import config
    from fgvc.api import pretraining_source
    from fgvc.models.weights import sha256_file

    cfg = config.apply(config.Config(), {"model.name": "test_vit", "model.pretrained": "true"})
    assert pretraining_source(cfg)["sha256"] == sha256_file(snapshot / "model.safetensors")


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Serves /<repo>/resolve/<revision>/<file> as the hub does; other files are 404 EntryNotFound."""

    files: dict[str, bytes] = {}

    def _answer(self, body: bool):
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802 -- http.server's naming
        self._answer(False)

    def do_GET(self):  # noqa: N802
        self._answer(True)

    def log_message(self, *args):
        pass


def test_timm_weights_are_downloaded_into_the_cache_when_the_host_answers(hf, tmp_path, monkeypatch):
    source = source_weights(tmp_path / "model.safetensors")
    FakeHub.files = {f"/{REPO}/resolve/main/model.safetensors": (tmp_path / "model.safetensors").read_bytes()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        set_endpoint(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
        model = create_model("test_vit", 3, pretrained=True, image_size=160)
    finally:
        server.shutdown()
        server.server_close()
    assert torch.equal(model.net.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert list((hf / "models--timm--test_vit.r160_in1k" / "snapshots").glob("*/model.safetensors"))


def test_timm_weights_served_by_url_name_the_url_and_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.TIMEOUT_S: False)
    with pytest.raises(UserError, match=r"gcvit_xxtiny_224_nvidia-d1d86009\.pth in .*checkpoints"):
        hub.timm_weights_file("gcvit_xxtiny")


def test_torchvision_weights_offline_fail_before_urllib(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=hub.TIMEOUT_S: False)
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_download)
    _, weights = TORCHVISION_MODELS["resnet18"]
    with pytest.raises(UserError, match=r"resnet18-f37072fd\.pth are not cached and download\.pytorch\.org "
                                        r"cannot be reached; download .* and put it in .*checkpoints"):
        create_model("resnet18", 5, pretrained=True)


def test_clip_weights_offline_fail_fast_naming_repository_file_and_folder(hf, tmp_path, monkeypatch):
    monkeypatch.setattr(open_clip, "download_pretrained", no_download)
    start = time.perf_counter()
    with pytest.raises(UserError) as e:
        load_clip("ViT-B-16", "openai", cache_dir=tmp_path / "clip")
    assert time.perf_counter() - start < 10
    message = str(e.value)
    assert "cannot be reached" in message and "timm/vit_base_patch16_clip_224.openai" in message
    assert "open_clip_model.safetensors" in message
    assert str(tmp_path / "clip" / "models--timm--vit_base_patch16_clip_224.openai") in message


def test_clip_hf_hub_name_offline_fails_fast(hf, monkeypatch):
    monkeypatch.setattr(open_clip, "create_model", no_download)
    with pytest.raises(UserError, match=r"hf-hub:fgvc-test/tiny-hub.*not cached"):
        load_clip("hf-hub:fgvc-test/tiny-hub")
