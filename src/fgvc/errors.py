"""The one user-facing error type, and its one-sentence text."""

from __future__ import annotations

import re


class UserError(Exception):
    """A mistake the user can fix: printed as one sentence by the CLI, exit code 2."""


class UnreadableImage(UserError):
    """An image file that cannot be read or decoded (training can leave these out: data.skip_bad_images)."""


class ImageTooLarge(UnreadableImage):
    """An image over PIL's decompression-bomb pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``); refused undecoded."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a command that keeps its finished work in ``run_dir``: the CLI names that folder in the
    line that says how to continue."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir


# A DataLoader worker re-raises an error as type(e)("Caught ... Original Traceback ...\npkg.Type: message")
_WORKER_WRAPPED = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")
_LAST_LINE = re.compile(r"^[\w.]+: (.*)$")


def message(e: BaseException) -> str:
    """The sentence of an error, without the worker traceback a DataLoader wraps around it."""
    text = str(e)
    if _WORKER_WRAPPED.match(text):
        last = text.rstrip().splitlines()[-1]
        m = _LAST_LINE.match(last)
        return m.group(1) if m else last
    return text
