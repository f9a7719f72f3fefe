"""`prepare` against a local HTTP server on 127.0.0.1 serving archives the tests build."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fgvc.data import cub, dogs, download
from fgvc.errors import UserError


class Server:
    """Serves ``files`` ({url path: bytes}); honours Range only when ``ranges``; cuts bodies at ``cut``."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut: int | None = None
        self.log: list[tuple[str, str | None]] = []
        self.sent = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.log.append((self.path, self.headers.get("Range")))
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start, header = 0, self.headers.get("Range")
                if owner.ranges and header:
                    start = int(header.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                body = body[:owner.cut] if owner.cut is not None else body
                self.wfile.write(body)
                owner.sent += len(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


def _tar(entries: dict[str, Path | bytes], mode: str = "w:gz", extra=()) -> bytes:
    """An archive of {name in archive: folder/file on disk or bytes}; ``extra`` = raw TarInfo members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, src in entries.items():
            if isinstance(src, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(src)
                tf.addfile(info, io.BytesIO(src))
            else:
                tf.add(src, arcname=name)
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def cub_tgz(tmp_path_factory) -> bytes:
    from fgvc.data import synthetic

    root = synthetic.generate(tmp_path_factory.mktemp("arch") / "c", classes=2, per_class=4, size=32)
    return _tar({"CUB_200_2011": root / "CUB_200_2011", "attributes.txt": b"1 has_bill_shape::curved\n"})


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_prepare_cub_downloads_verifies_extracts_and_is_idempotent(server, cub_tgz, tmp_path, capsys):
    server.files["/CUB_200_2011.tgz"] = cub_tgz
    root = tmp_path / "data"
    url = server.url + "/CUB_200_2011.tgz"
    assert download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=False) == root
    assert len(cub.load(root, "test")) == 4
    assert _leftovers(root) == ["CUB_200_2011", "CUB_200_2011.tgz", "attributes.txt"]
    requests = len(server.log)
    download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=True)
    assert len(server.log) == requests  # nothing fetched again
    assert "already prepared" in capsys.readouterr().err


def test_wrong_md5_deletes_the_download_and_extracts_nothing(server, cub_tgz, tmp_path):
    server.files["/CUB_200_2011.tgz"] = cub_tgz
    root = tmp_path / "data"
    with pytest.raises(UserError) as e:
        download.prepare("cub200", root, url=server.url + "/CUB_200_2011.tgz", md5="0" * 32, progress=False)
    msg = str(e.value)
    assert "0" * 32 in msg and _md5(cub_tgz) in msg and "--md5" in msg and "--url" in msg
    assert _leftovers(root) == []


@pytest.mark.parametrize("member,words", [
    ("../evil.txt", "'..'"),
    ("ABSOLUTE", "absolute path"),  # replaced by a path under the test's own tmp_path
    ("link", "symbolic link"),
    ("hard", "hard link"),
    ("dev", "device"),
])
def test_unsafe_members_are_refused_and_nothing_is_extracted(server, cub_tgz, tmp_path, member, words):
    outside = tmp_path / "outside.txt"
    member = outside.as_posix() if member == "ABSOLUTE" else member
    info = tarfile.TarInfo(member)
    if member == "link":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif member == "hard":
        info.type, info.linkname = tarfile.LNKTYPE, "CUB_200_2011/images.txt"
    elif member == "dev":
        info.type = tarfile.CHRTYPE
    else:
        info.size = 3
    data = _tar({"CUB_200_2011/images.txt": b"1 a/b.jpg\n"}, extra=[info])
    server.files["/evil.tgz"] = data
    root = tmp_path / "data"
    with pytest.raises(UserError) as e:
        download.prepare("cub200", root, url=server.url + "/evil.tgz", md5=_md5(data), progress=False)
    assert repr(member) in str(e.value) and words in str(e.value)
    assert _leftovers(root) == ["CUB_200_2011.tgz"]  # the archive stays for inspection; nothing extracted
    assert not (root / "evil.txt").exists() and not outside.exists()


def test_http_404_names_the_url_and_suggests_a_mirror(server, tmp_path):
    with pytest.raises(UserError, match=r"/missing\.tgz failed with HTTP 404.*--url"):
        download.prepare("cub200", tmp_path / "d", url=server.url + "/missing.tgz", progress=False)


def test_unreachable_server_names_the_url(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/CUB_200_2011.tgz"
    with pytest.raises(UserError, match=rf"cannot reach {url}.*--url"):
        download.prepare("cub200", tmp_path / "d", url=url, progress=False)


def test_broken_download_resumes_with_a_range_request(server, cub_tgz, tmp_path):
    server.files["/CUB_200_2011.tgz"] = cub_tgz
    root, url, half = tmp_path / "data", server.url + "/CUB_200_2011.tgz", len(cub_tgz) // 2
    server.cut = half
    with pytest.raises(UserError, match="run the same command again to resume"):
        download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=False)
    assert (root / "CUB_200_2011.tgz.part").stat().st_size == half
    server.cut, server.sent = None, 0
    download.prepare("cub200", root, url=url, md5=_md5(cub_tgz), progress=False)
    assert server.log[-1] == ("/CUB_200_2011.tgz", f"bytes={half}-")
    assert server.sent == len(cub_tgz) - half  # only the rest travelled
    assert len(cub.load(root, "train", val_fraction=0.0)) == 4


def test_server_without_range_support_restarts_the_download(server, cub_tgz, tmp_path):
    server.files["/CUB_200_2011.tgz"] = cub_tgz
    server.ranges = False
    root = tmp_path / "data"
    root.mkdir()
    (root / "CUB_200_2011.tgz.part").write_bytes(b"stale bytes from another file")
    download.prepare("cub200", root, url=server.url + "/CUB_200_2011.tgz", md5=_md5(cub_tgz), progress=False)
    assert server.sent == len(cub_tgz)
    assert (root / "CUB_200_2011.tgz").read_bytes() == cub_tgz


def test_archive_without_the_dataset_folder_is_refused(server, tmp_path):
    data = _tar({"something_else/readme.txt": b"hello"})
    server.files["/x.tgz"] = data
    root = tmp_path / "data"
    with pytest.raises(UserError, match="holds no CUB_200_2011/ folder"):
        download.prepare("cub200", root, url=server.url + "/x.tgz", md5=_md5(data), progress=False)
    assert _leftovers(root) == ["CUB_200_2011.tgz"]


def test_prepare_dogs_from_a_base_url(server, dogs_root, tmp_path):
    lists = {p.name: p.read_bytes() for p in (dogs_root / "lists").iterdir()}
    server.files["/mirror/images.tar"] = _tar({"Images": dogs_root / "Images"}, mode="w")
    server.files["/mirror/annotation.tar"] = _tar({"Annotation": dogs_root / "Annotation"}, mode="w")
    server.files["/mirror/lists.tar"] = _tar(lists, mode="w")  # flat, like the official lists.tar
    root = tmp_path / "data"
    download.prepare("dogs", root, url=server.url + "/mirror", progress=False)
    test = dogs.load(root, "test")
    assert (root / "StanfordDogs" / "lists" / "test_list.mat").is_file()
    assert len(test) == len(dogs.load(dogs_root, "test")) and test.has_boxes
    with pytest.raises(UserError, match="3 comma-separated values"):
        download.prepare("dogs", tmp_path / "other", url=server.url + "/mirror", md5="abc", progress=False)
