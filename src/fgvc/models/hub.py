"""Pretrained weights over the network, failing fast without one.

Before any download, ``reachable`` opens one TCP connection to the host (or the proxy)
with a short timeout: a machine without network gets fgvc's sentence in seconds instead
of the Hugging Face hub's retries (about 45 s per file). ``timm_weights_file`` finds a
timm model's weights in the Hugging Face cache (or torch's, for the few timm weights still
served by URL), downloads them when it can, and otherwise names the repository, the file
and the cache folder they belong in.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import torch

from fgvc.errors import UserError

TIMEOUT_S = 3.0


def reachable(url: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host (or its proxy) opens within ``timeout`` seconds.

    Name resolution is inside the time limit too: the connection is tried in a thread that
    is given up on (a daemon, so it never holds the process) when it takes longer.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return False
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or (443 if p.scheme == "https" else 80)
    result: list[bool] = []

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:  # refused, unresolvable, unroutable: the answer is "no"
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_repo_folder(repo_id: str, cache_dir: str | Path | None = None) -> Path:
    """The folder of a model repository inside the Hugging Face cache."""
    return Path(cache_dir or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def hf_cached(repo_id: str, filename: str, revision: str | None = None,
              cache_dir: str | Path | None = None) -> str | None:
    """Path of a cached file of a hub repository, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir or hf_cache_dir()), revision=revision)
    return hit if isinstance(hit, str) and os.path.isfile(hit) else None


def timm_weights_file(name: str) -> str | None:
    """Local path of a timm model's pretrained weights (downloaded if needed), or None to let timm fetch them.

    Mirrors timm's choice of source: the Hugging Face hub when the weights have a repository
    there (the ``.safetensors`` twin first), else the URL into torch's hub cache. A missing
    file with no way to download it is a UserError naming the repository, file and folder.
    """
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = [n for n in timm.list_pretrained(f"{name.split('.')[0]}.*")]
        hint = f"; pretrained ones: {', '.join(tags[:6])}" if tags else ""
        raise UserError(f"timm model {name!r} has no downloadable pretrained weights{hint}; "
                        "use model.pretrained=false or pick a tagged name")
    if cfg.hf_hub_id:
        repo_id, revision, names = _timm_hf_files(cfg)
        hit = _first_cached(repo_id, names, revision)
        if hit:
            return hit
        endpoint = hf_endpoint()
        folder = hf_repo_folder(repo_id)
        where = (f"{' or '.join(names)} of the Hugging Face repository {repo_id} ({endpoint}/{repo_id}) belongs in "
                 f"{folder} (`hf download {repo_id} {names[0]}` on a machine with network access fills it; "
                 f"copy that folder here)")
        if hf_offline():
            raise UserError(f"pretrained weights for timm model {name!r} are not cached and HF_HUB_OFFLINE is set: "
                            f"{where}, or use model.pretrained=false")
        if not reachable(endpoint):
            raise UserError(f"pretrained weights for timm model {name!r} are not cached and {endpoint} cannot be "
                            f"reached: {where}, or use model.pretrained=false")
        return _hf_download(name, repo_id, names, revision, endpoint, where)
    filename = os.path.basename(urllib.parse.urlsplit(cfg.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return str(cached)
    if not reachable(cfg.url):
        raise UserError(f"pretrained weights for timm model {name!r} are not cached and {cfg.url} cannot be "
                        f"reached: download it and put {filename} in {cached.parent}, or use model.pretrained=false")
    return None  # timm downloads it into torch's hub cache


def _timm_hf_files(cfg) -> tuple[str, str | None, list[str]]:
    """(repository, revision, file names in timm's order of preference) of a timm pretrained_cfg on the hub."""
    from timm.models._hub import _get_safe_alternatives, hf_split

    repo_id, revision = hf_split(cfg.hf_hub_id)
    filename = cfg.hf_hub_filename or "pytorch_model.bin"
    return repo_id, revision, ([] if filename.endswith(".safetensors") else list(_get_safe_alternatives(filename))) + [filename]


def _first_cached(repo_id: str, names: list[str], revision: str | None) -> str | None:
    return next((hit for n in names if (hit := hf_cached(repo_id, n, revision))), None)


def cached_weights_file(name: str, torchvision_url: str | None = None) -> Path | None:
    """The cached file the pretrained torchvision or timm model ``name`` loads, or None; never downloads.

    The same places ``fgvc.models.factory`` reads: torch's hub cache for torchvision (and URL-served
    timm weights), the Hugging Face cache for timm weights with a hub repository. ``torchvision_url``:
    the weights URL when ``name`` is a torchvision model (``fgvc.models.factory.TORCHVISION_MODELS``)."""
    if torchvision_url:
        url = torchvision_url
    else:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        if cfg is None:
            return None
        if cfg.hf_hub_id:
            repo_id, revision, names = _timm_hf_files(cfg)
            hit = _first_cached(repo_id, names, revision)
            return Path(hit) if hit else None
        url = cfg.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlsplit(url or "").path)
    return cached if url and cached.is_file() else None


def _hf_download(name: str, repo_id: str, names: list[str], revision: str | None, endpoint: str, where: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    for candidate in names:
        try:
            return hf_hub_download(repo_id, candidate, revision=revision, endpoint=endpoint)
        except Exception as e:  # noqa: BLE001 -- any hub or network failure means the same to the user
            if isinstance(e, EntryNotFoundError) and not isinstance(e, LocalEntryNotFoundError):
                continue  # the server has no such file (no .safetensors twin, say): the next name
            raise UserError(f"pretrained weights for timm model {name!r} could not be downloaded "
                            f"({e.__class__.__name__}): {where}, or use model.pretrained=false") from None
    raise UserError(f"pretrained weights for timm model {name!r} are missing from {endpoint}/{repo_id} "
                    f"(no {' or '.join(names)}); use model.pretrained=false or another tag")
