"""Set environment variables for a block and restore them after (standard library only).

Used where a process pool must inherit settings at its children's start (one BLAS/OpenMP thread per
worker) without leaving them changed for the parent: ``with environment({"OMP_NUM_THREADS": "1"}): ...``.
A bottom module like ``atomic_io``: any layer may import it (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block; on exit (also on error) each variable is
    back to its old value, or removed if it was not set."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
