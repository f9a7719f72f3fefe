"""`fgvc data prepare` against a local server on 127.0.0.1: server errors explained with the mirror option,
a full disk stops with one sentence and leaves no half file or half dataset."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile

import pytest
from reliability_helpers import Server, one_line_error

from fgvc.cli import main
from fgvc.data import cub, download, synthetic
from fgvc.errors import UserError


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def cub_tgz(tmp_path_factory) -> bytes:
    root = synthetic.generate(tmp_path_factory.mktemp("arch") / "c", classes=2, per_class=4, size=32)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(root / "CUB_200_2011", arcname="CUB_200_2011")
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("code, words", [
    (403, "refuses access"),
    (500, "server has a problem"),
    (503, "server has a problem"),
    (429, "limiting requests"),
])
def test_server_errors_are_explained_with_the_mirror_option(server, tmp_path, capsys, code, words):
    server.status["/CUB_200_2011.tgz"] = code
    root = tmp_path / "data"
    assert main(["data", "prepare", "cub200", "--root", str(root), "--url", server.url + "/CUB_200_2011.tgz"]) == 2
    line = one_line_error(capsys.readouterr())
    assert f"HTTP {code}" in line and words in line and "--url" in line
    assert _leftovers(root) == []


class _FullDisk:
    """A writable file that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_during_download_keeps_only_the_resumable_part(server, cub_tgz, tmp_path, monkeypatch):
    server.files["/CUB_200_2011.tgz"] = cub_tgz
    root, url = tmp_path / "data", server.url + "/CUB_200_2011.tgz"
    half = len(cub_tgz) // 2
    monkeypatch.setattr(download, "open", lambda path, mode: _FullDisk(open(path, mode), half), raising=False)
    with pytest.raises(UserError) as e:
        download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=False)
    monkeypatch.undo()
    assert "disk is full" in str(e.value) and "CUB_200_2011.tgz.part" in str(e.value)
    assert _leftovers(root) == ["CUB_200_2011.tgz.part"]  # never a half file under the archive's own name
    download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=False)  # space freed: run again
    assert len(cub.load(root, "test")) == 4


def test_disk_full_during_extraction_leaves_no_half_dataset(server, cub_tgz, tmp_path, monkeypatch):
    server.files["/CUB_200_2011.tgz"] = cub_tgz
    root, url = tmp_path / "data", server.url + "/CUB_200_2011.tgz"
    real_open, opened = tarfile.bltn_open, []

    def open_member(path, mode="r", *args, **kwargs):
        opened.append(path)
        f = real_open(path, mode, *args, **kwargs)
        return _FullDisk(f, 0) if len(opened) > 5 else f  # a few files fit, then the disk is full

    monkeypatch.setattr(tarfile, "bltn_open", open_member)
    with pytest.raises(UserError) as e:
        download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=False)
    monkeypatch.undo()
    assert "disk is full while extracting" in str(e.value) and len(opened) > 5
    assert _leftovers(root) == ["CUB_200_2011.tgz"]  # no CUB_200_2011/, no hidden extraction folder
    requests = len(server.log)
    download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=False)
    assert len(server.log) == requests  # the archive was reused, not fetched again
    assert len(cub.load(root, "train", val_fraction=0.0)) == 4


def test_an_extraction_folder_left_by_a_killed_run_is_removed(server, cub_tgz, tmp_path):
    server.files["/CUB_200_2011.tgz"] = cub_tgz
    root = tmp_path / "data"
    (root / ".fgvc-extract-1a2b3c4d" / "CUB_200_2011").mkdir(parents=True)
    download.prepare("cub200", root, url=server.url + "/CUB_200_2011.tgz", md5=_md5(cub_tgz), progress=False)
    assert _leftovers(root) == ["CUB_200_2011", "CUB_200_2011.tgz"]


def test_a_corrupt_archive_is_one_sentence(server, cub_tgz, tmp_path, capsys):
    data = cub_tgz[: len(cub_tgz) // 2]  # a truncated .tgz whose md5 the user vouched for
    server.files["/CUB_200_2011.tgz"] = data
    root = tmp_path / "data"
    assert main(["data", "prepare", "cub200", "--root", str(root), "--url", server.url + "/CUB_200_2011.tgz",
                 "--md5", _md5(data)]) == 2
    assert "cannot be extracted" in one_line_error(capsys.readouterr())
    assert _leftovers(root) == ["CUB_200_2011.tgz"]
