"""`fgvc data audit` never replaces a finished audit without being asked: a rerun of the default folder
writes a new one, `--out` at a finished audit is one sentence, `--overwrite` replaces it."""

import pytest
from audit_helpers import folder_dataset

from fgvc.cli import main

pytest.importorskip("imagehash", reason="the audit extra is not installed: pip install -e '.[audit]'")


def test_a_finished_audit_is_never_overwritten_silently(tmp_path, monkeypatch, capsys):
    root = folder_dataset(tmp_path / "data", classes=2, train=3, test=2)
    monkeypatch.chdir(tmp_path)
    assert main(["data", "audit", "folder", "--root", str(root), "--quiet"]) == 0
    first = tmp_path / "audit" / "folder" / "summary.json"
    before, written = first.read_bytes(), first.stat().st_mtime_ns
    assert main(["data", "audit", "folder", "--root", str(root), "--quiet"]) == 0
    assert (tmp_path / "audit" / "folder-2" / "summary.json").is_file() and first.read_bytes() == before
    capsys.readouterr()
    assert main(["data", "audit", "folder", "--root", str(root), "--out", str(first.parent), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished audit" in err and "--overwrite" in err and first.read_bytes() == before
    assert main(["data", "audit", "folder", "--root", str(root), "--out", str(first.parent), "--overwrite",
                 "--quiet"]) == 0
    assert first.stat().st_mtime_ns != written  # written again
