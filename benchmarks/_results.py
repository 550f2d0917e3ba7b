"""What the benchmarks share: the command line's ``--data`` and ``--write``, and publishing the Markdown
table (print it, and replace one marker-delimited section of benchmarks/RESULTS.md with it, atomic write)."""

import argparse
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


def publish_table(header: str, rows: list[str], write: str | None, section: str) -> str:
    """``header`` then the table ``rows`` (one Markdown line each): printed, and with ``write`` (the
    path of a RESULTS.md) put in its section ``section`` (:func:`replace_section`); returns the text."""
    table = header + "\n".join(rows) + "\n"
    print(table)
    if write:
        replace_section(write, section, table)
    return table


def benchmark_parser(doc: str, section: str, data: str = "builtin:molecules-demo") -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--data`` (a dataset path or ``builtin:<name>``, default
    ``data``) and ``--write RESULTS_MD`` (replace the ``section`` section of that file); the module
    docstring ``doc`` is the description. The caller adds its own options."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=data)
    p.add_argument("--write", metavar="RESULTS_MD", help=f"replace the {section} section of this file")
    return p
