"""Shared by tests/reliability (imported by name: tests/ has no packages)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# tiny, fast and deterministic on a CPU: every run of the reliability tests uses these (train.threads=fixed:
# beside other jobs train.threads=auto would change the thread count, and the last bits with it)
FAST = ["model.name=test_resnet", "data.image_size=32", "train.batch_size=8", "train.lr=2e-3", "train.patience=0",
        "data.num_workers=0", "train.precision=32-true", "train.accelerator=cpu", "aug.geometric=true",
        "model.dropout=0.2", "data.name=synthbirds", "train.threads=fixed"]
TIMING = ("seconds", "train_seconds", "train_images_per_second")


def metrics_without_timing(run_dir: Path) -> dict:
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in TIMING}


def history_without_timing(run_dir: Path) -> list[list[str]]:
    """history.csv rows without the seconds column."""
    rows = [line.split(",") for line in (Path(run_dir) / "history.csv").read_text().splitlines()]
    drop = rows[0].index("seconds")
    return [r[:drop] + r[drop + 1:] for r in rows]


def one_line_error(captured) -> str:
    """The one error line of a failed command (the last on stderr, after any progress lines); fails the
    test on a traceback or on an error that spans several lines."""
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err
    lines = [ln for ln in captured.err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("fgvc: "), captured.err
    assert sum(ln.startswith("fgvc: ") for ln in lines) == 1, captured.err
    return lines[-1]


class Evil:
    """Unpickling this runs code: it writes ``marker``. A stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class Server:
    """Serves ``files`` ({url path: bytes}) on 127.0.0.1; ``status`` ({url path: code}) answers with an error."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.log: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.log.append(self.path)
                if self.path in owner.status:
                    self.send_error(owner.status[self.path])
                    return
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
