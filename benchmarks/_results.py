"""Replace one marker-delimited section of benchmarks/RESULTS.md (atomic write)."""

import os
from pathlib import Path


def replace_section(path: str, name: str, body: str) -> None:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` in ``path`` (appending
    the section if it is missing); written to a temporary file, then renamed."""
    p = Path(path)
    text = p.read_text() if p.exists() else "# Benchmark results\n"
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)
