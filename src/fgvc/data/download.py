"""Download, verify and extract CUB-200-2011 and Stanford Dogs (`fgvc data prepare`).

Downloads go to ``<archive>.part`` and resume with an HTTP Range request when the server
allows it (else they restart); a known md5 is checked before the archive is used.
Archives are extracted member by member into a hidden folder beside the target, refusing
absolute paths, ``..``, links and device files, then checked with the dataset's own
loader and renamed into place, so a failure never leaves a half dataset that loads.
A dataset that already loads is left alone.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import importlib
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path, PurePosixPath

from fgvc.errors import UserError
from fgvc.runs import check_out_dir

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
DOGS_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs/"
DOGS_FILES = ("images.tar", "lists.tar", "annotation.tar")
# where each Stanford Dogs archive is extracted inside the dataset folder: lists.tar holds
# flat .mat files, the other two hold their own Images/ and Annotation/ folders
DOGS_INTO = {"images.tar": ".", "lists.tar": "lists", "annotation.tar": "."}
FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
# the checksums torchvision's Flowers102 uses for the same files
FLOWERS_MD5 = {"102flowers.tgz": "52808999861908f626f3c1f4e79d11fa", "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
               "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c"}
# datasets made of several files under one base URL: (URL, {file: where it goes in the folder}, md5s, folder)
MULTI = {
    "dogs": (DOGS_URL, DOGS_INTO, {}, "StanfordDogs"),
    "flowers102": (FLOWERS_URL, {"102flowers.tgz": ".", "imagelabels.mat": ".", "setid.mat": "."}, FLOWERS_MD5,
                   "flowers-102"),
}
AIRCRAFT_URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"
AIRCRAFT_MD5 = None  # no published checksum; --md5 still checks one
NAMES = ("cub200", "dogs", "aircraft", "flowers102")
MODULES = {"cub200": "cub", "flowers102": "flowers"}  # the loader module of each name, when it is not the name itself
# datasets fgvc reads but cannot download: where to get them and where to put them
MANUAL = {
    "cars": "Stanford Cars has no official download any more: get devkit/, cars_train/, cars_test/ and "
            "cars_test_annos_withlabels.mat from a mirror and put them in {root}/stanford_cars",
    "nabirds": "NABirds is downloaded only after accepting its terms at https://dl.allaboutbirds.org/nabirds: "
               "extract it so that {root}/nabirds holds images.txt, hierarchy.txt and images/",
}
CHUNK = 1 << 20  # bytes per read
# what an HTTP status usually means for a dataset download; every one ends with the mirror option
HTTP_HINTS = {
    401: "the server wants a login",
    403: "the server refuses access to this file (some hosts block scripted downloads or moved the file)",
    404: "the file is not there (it may have moved)",
    410: "the file was removed",
    429: "the server is limiting requests: wait a while and run again",
}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr)


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "fgvc"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            return None  # the .part file already holds the whole file
        hint = HTTP_HINTS.get(e.code, "the server has a problem: run again later" if e.code >= 500
                              else "the file may have moved")
        raise UserError(f"downloading {url} failed with HTTP {e.code} {e.reason}: {hint}; "
                        "or pass a mirror with --url") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot reach {url} ({reason}); check the network connection or pass a mirror "
                        "with --url") from None


def download(url: str, dest: Path, md5: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` via ``dest.part`` (resumed with HTTP Range), md5-checked when given.

    An empty or None ``md5`` skips the check.
    """
    dest = Path(dest)
    md5 = md5.strip().lower() if md5 else None
    if dest.is_file():
        if md5 is None or md5sum(dest) == md5:
            _say(progress, f"{dest} is already downloaded")
            return dest
        _say(progress, f"{dest} does not match md5 {md5}; downloading it again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    resp = _open(url, start, timeout)
    if resp is not None and start and resp.status == 206 \
            and not resp.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
        resp.close()  # a range other than the one asked for: start over
        start, resp = 0, _open(url, 0, timeout)
    if resp is not None:
        with resp:
            if start and resp.status == 206:
                mode = "ab"
                _say(progress, f"resuming {dest.name} at {start} bytes")
            else:  # the server ignored the Range header: start over
                start, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            got = start
            try:
                from tqdm import tqdm

                with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                                  unit_divisor=1024, desc=dest.name, disable=not progress) as bar:
                    while block := resp.read(CHUNK):
                        f.write(block)
                        got += len(block)
                        bar.update(len(block))
            except OSError as e:
                if e.errno in DISK_FULL:
                    raise UserError(f"the disk is full: {part} stopped at {got} bytes; free space and run the "
                                    "same command again to resume from there") from None
                raise UserError(f"download of {url} broke off after {got} bytes ({e.__class__.__name__}); "
                                f"run the same command again to resume from {part}") from None
            except http.client.HTTPException as e:
                raise UserError(f"download of {url} broke off after {got} bytes ({e.__class__.__name__}); "
                                f"run the same command again to resume from {part}") from None
        if total is not None and got != total:
            raise UserError(f"download of {url} ended after {got} of {total} bytes; run the same command "
                            f"again to resume from {part}")
    if md5 is not None:
        actual = md5sum(part)
        if actual != md5:
            part.unlink()
            raise UserError(f"{dest.name} from {url} has md5 {actual} but {md5} was expected, so it "
                            "was deleted; run again to download it anew, pass --url to use another mirror, "
                            f"or --md5 {actual} if that file is known to be right")
    part.replace(dest)
    return dest


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    p = PurePosixPath(m.name.replace("\\", "/"))
    if p.is_absolute() or (p.parts and p.parts[0].endswith(":")):
        problem = "has an absolute path"
    elif ".." in p.parts:
        problem = "points outside the target folder with '..'"
    elif m.issym() or m.islnk():
        problem = f"is a {'symbolic' if m.issym() else 'hard'} link (to {m.linkname!r})"
    elif not (m.isfile() or m.isdir()):
        problem = "is a device, pipe or other special file"
    else:
        return
    raise UserError(f"{archive} member {m.name!r} {problem}; refusing to extract it: the archive is corrupt "
                    "or malicious, so delete it and download it from a trusted source")


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while each is empty: never a folder that holds anything (a
    partial download stays, to be resumed), never one above them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            return


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive (any compression) into ``dest``, refusing unsafe members (UserError naming it)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tf:
            for m in tf:  # one streaming pass; every member is checked before it is written
                _check_member(m, archive)
                tf.extract(m, dest, set_attrs=False, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except OSError as e:
        if e.errno in DISK_FULL:
            raise UserError(f"the disk is full while extracting {archive}; free space and run the same command "
                            "again (the archive is kept and reused)") from None
        raise UserError(f"{archive} cannot be extracted ({e.__class__.__name__}: {e}); delete it and run "
                        "again to download it anew") from None
    except (tarfile.TarError, EOFError) as e:
        raise UserError(f"{archive} cannot be extracted ({e.__class__.__name__}: {e}); delete it and run "
                        "again to download it anew") from None


def _validate(name: str, root: Path) -> None:
    """Raise UserError unless the dataset under ``root`` lists classes and all its image files exist."""
    module = importlib.import_module(f"fgvc.data.{MODULES.get(name, name)}")
    train, test, _, base = module.read_all(root)
    missing = [s.path for s in train + test if not s.path.is_file()]
    if missing:
        raise UserError(f"{missing[0]} is listed in {base} but missing ({len(missing)} files missing)")


def _ready(name: str, root: Path) -> bool:
    try:
        _validate(name, root)
        return True
    except UserError:
        return False


def _md5s(name: str, md5, files: tuple[str, ...], known: dict[str, str]) -> dict[str, str | None]:
    """Per file of a multi-file dataset, the md5 to check: ``md5`` (comma-separated, in ``files``
    order, or a dict) over the ``known`` ones; None skips a file's check."""
    if md5 is None:
        return {f: known.get(f) for f in files}
    if isinstance(md5, dict):
        return {f: md5.get(f) for f in files}
    values = [v.strip() or None for v in str(md5).split(",")]
    if len(values) != len(files):
        raise UserError(f"--md5 for {name} takes {len(files)} comma-separated values, for "
                        f"{', '.join(files)} in that order (empty to skip one); got {md5!r}")
    return dict(zip(files, values))


def prepare(name: str, root, url: str | None = None, md5=None, progress: bool = True,
            keep_archives: bool = True) -> Path:
    """Download, verify and extract dataset ``name`` ('cub200', 'dogs', 'aircraft' or 'flowers102') into
    ``root``; return ``root``.

    cub200 lands in ``root/CUB_200_2011``, dogs in ``root/StanfordDogs``, aircraft in
    ``root/fgvc-aircraft-2013b``, flowers102 in ``root/flowers-102``; each loader takes ``root``.
    ``url`` replaces the official URL (for dogs and flowers102: the base URL of their three files);
    ``md5`` replaces the known checksum (for dogs and flowers102: three comma-separated values or a
    {file: md5} dict); aircraft has no published checksum, so its archive
    is checked only when ``md5`` is given. For 'cars' and 'nabirds' (no download) it returns ``root``
    when the dataset is already there and otherwise raises UserError saying where to put the files.
    """
    if name not in NAMES and name not in MANUAL:
        raise UserError(f"cannot prepare {name!r}; choose one of {', '.join(NAMES + tuple(MANUAL))}")
    root = check_out_dir(root, "--root")  # a file, or under one: one sentence before any download
    if _ready(name, root):
        _say(progress, f"{name} is already prepared in {root}; nothing to do")
        return root
    if name in MANUAL:
        raise UserError(MANUAL[name].format(root=root) + f", then run `fgvc data info {name} --root {root}`")
    if name == "cub200":
        jobs = [("CUB_200_2011.tgz", url or CUB_URL, md5 if md5 is not None else CUB_MD5, ".")]
        folder = "CUB_200_2011"
    elif name == "aircraft":
        jobs = [("fgvc-aircraft-2013b.tar.gz", url or AIRCRAFT_URL, md5 if md5 is not None else AIRCRAFT_MD5, ".")]
        folder = "fgvc-aircraft-2013b"
    else:  # several files from one base URL, each extracted (or copied) into the dataset folder
        default_url, into, known, folder = MULTI[name]
        base = (url or default_url).rstrip("/")
        if base.endswith(tuple(into)):  # a file URL was given: use its folder
            base = base.rsplit("/", 1)[0]
        md5s = _md5s(name, md5, tuple(into), known)
        jobs = [(f, f"{base}/{f}", md5s[f], into[f]) for f in into]
    target = root / folder
    if target.exists():
        raise UserError(f"{target} exists but does not hold a complete {name} dataset; remove it (or "
                        "choose another --root) and run again")
    created = [p for p in (root, *root.parents) if not p.exists()]  # deepest first: the folders made here
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".fgvc-extract-*"):  # left by a run that was killed while extracting
        shutil.rmtree(stale, ignore_errors=True)
    try:
        archives = [(download(u, root / f, m, progress), into) for f, u, m, into in jobs]
    except BaseException:  # no network, a bad URL, Ctrl-C: the folders made above go, if still empty
        _remove_empty(created)
        raise
    tmp = root / f".fgvc-extract-{uuid.uuid4().hex[:8]}"
    try:
        for archive, into in archives:
            _say(progress, f"extracting {archive.name}")
            if name not in MULTI:  # CUB's and Aircraft's archives hold their folder themselves
                safe_extract(archive, tmp)
            elif archive.suffix == ".mat":  # Flowers-102's label files are not archives
                (tmp / folder).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(archive, tmp / folder / archive.name)
            else:  # the Dogs archives and 102flowers.tgz go inside their dataset folder
                safe_extract(archive, tmp / folder / into)
        if not (tmp / folder).is_dir():
            raise UserError(f"{archives[0][0]} holds no {folder}/ folder; is --url pointing at the right file?")
        try:
            _validate(name, tmp)
        except UserError as e:
            raise UserError(f"the extracted archive is not a valid {name} dataset: {e}") from None
        (tmp / folder).rename(target)  # the one step that makes the dataset visible: atomic
        for extra in tmp.iterdir():  # CUB's attributes.txt and the like, when not already there
            if not (root / extra.name).exists():
                extra.rename(root / extra.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not keep_archives:
        for archive, _ in archives:
            archive.unlink(missing_ok=True)
    _say(progress, f"{name} is ready in {root}")
    return root
