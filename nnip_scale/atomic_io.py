"""The one way nnip-scale writes a file whole: a temporary file in the same directory, fsynced, then
``os.replace`` over the target, so a reader (or a crash) sees the old file or the new one, never half
of either. On any error the temporary file is removed and the old file is left as it was.

Standard library only (no torch, no numpy): every layer uses it, the torch-free scaling toolkit
included (docs/architecture.md). ``setup.py`` keeps its own copy because it runs before the package
can be imported. Temporary names are ``.<name>.<pid>.<random>.tmp`` beside the target: hidden, unique
per writer (two processes never share one) and never matching a reader's ``*.jsonl`` / ``*.csv`` /
``*.json`` glob. The new file gets the permissions a plain ``open(path, "w")`` would give (the umask
applies), not ``tempfile.mkstemp``'s 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["AtomicFile", "atomic_open", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


class AtomicFile:
    """A file written under a temporary name and moved over ``path`` by :meth:`commit`.

    For writers that fill a file over time (the prediction writer appends a batch at a time):
    create it, write to :attr:`tmp` (``open(af.tmp, "a")``, or anything that takes a path, such as
    ``savefig``), then :meth:`commit`; :meth:`discard` (also safe after a commit, or twice) removes
    the temporary file and leaves ``path`` untouched. The temporary file exists, empty, from
    construction on. One-shot writes use :func:`atomic_open` or the ``atomic_write_*`` functions.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        # O_EXCL: never write into a file that another writer opened under the same name
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            raise FileNotFoundError(f"cannot write {self.path}: its folder {self.path.parent} does not exist; "
                                    "expected an existing directory") from None
        os.close(fd)
        self.committed = False

    def commit(self) -> Path:
        """fsync the temporary file and rename it over :attr:`path` (atomic on POSIX); returns the path."""
        if self.committed:
            raise ValueError(f"atomic write of {self.path}: already committed; expected one commit per AtomicFile")
        try:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        self.committed = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (if still there); the target is left as it was."""
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """``with atomic_open(path) as fh: fh.write(...)``: the file object of a temporary file that
    replaces ``path`` when the block ends normally, and is removed (``path`` untouched) when the
    block raises. ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open({str(path)!r}, mode={mode!r}): expected mode 'w' or 'wb'")
    out = AtomicFile(path)
    try:
        with open(out.tmp, mode, encoding=None if mode == "wb" else encoding) as fh:
            yield fh
            fh.flush()
        out.commit()
    finally:
        out.discard()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (module docstring); returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (module docstring); returns the path."""
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None, trailing_newline: bool = False) -> Path:
    """``json.dumps(obj, indent=..., sort_keys=..., default=...)`` (plus a final newline when
    ``trailing_newline``) written to ``path`` atomically. The object is serialised before anything
    is written, so an object that cannot be serialised raises and leaves ``path`` as it was."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    return atomic_write_text(path, text + "\n" if trailing_newline else text)
