"""Render the contract's tables as Markdown: ``python -m vitals_lake.schema_doc``.

docs/data-model.md embeds this output between markers; a test fails when they drift apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from vitals_lake import contract as c
from vitals_lake.catalogue import describe, table_description
from vitals_lake.cli import usage_error

DOC = Path("docs/data-model.md")
BEGIN = "<!-- BEGIN GENERATED: python -m vitals_lake.schema_doc -->"
END = "<!-- END GENERATED -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "timestamp (UTC, µs)"
    if pa.types.is_list(t):
        return f"list<{_type(t.value_type)}>"
    return str(t)


def render() -> str:
    out = [BEGIN]
    for layer, spec in c.TABLES.items():
        part = ", ".join(spec.partition_by) or "none"
        if spec.hour_of:
            part += f", then `{c.EVENT_HOUR}` (the UTC hour of `{spec.hour_of}`; lake layout only)"
        out += [
            "",
            f"### `{spec.name}` (`{layer}`; partitioned by {part})",
            "",
            table_description(spec.name),
            "",
            "| column | type | null | description |",
            "|---|---|---|---|",
        ]
        for f in spec.schema:
            null = "yes" if f.nullable else "no"
            out.append(f"| `{f.name}` | {_type(f.type)} | {null} | {_cell(describe(f.name))} |")
    out.append(END)
    return "\n".join(out)


def write(doc: Path = DOC) -> None:
    """Replace the generated section of ``doc`` in place."""
    text = doc.read_text()
    doc.write_text(text[: text.index(BEGIN)] + render() + text[text.index(END) + len(END) :])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitals_lake.schema_doc", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--write", action="store_true", help="replace the generated section of --doc (default: print it)"
    )
    parser.add_argument("--doc", type=Path, default=DOC, help=f"the document to rewrite (default {DOC})")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(render() + "\n")
        return 0
    try:
        write(args.doc)
    except (OSError, ValueError) as exc:  # no such file, or no BEGIN / END markers in it
        return usage_error(parser, f"--doc {args.doc}: {exc}")
    print(f"rewrote the generated section of {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
