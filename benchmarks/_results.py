"""Replace one marker-delimited section of benchmarks/RESULTS.md (atomic write)."""

from pathlib import Path

from nnip_scale.atomic_io import atomic_write_text


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
    atomic_write_text(p, text)
