"""Render the contract's tables as Markdown: ``python -m vitals_lake.schema_doc``.

docs/data-model.md embeds this output between markers; a test fails when they drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa

from vitals_lake import contract as c

BEGIN = "<!-- BEGIN GENERATED: python -m vitals_lake.schema_doc -->"
END = "<!-- END GENERATED -->"
_UNITS = {v.name: v.unit for v in c.VITAL_SIGNS}


def _type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "timestamp (UTC, µs)"
    if pa.types.is_list(t):
        return f"list<{_type(t.value_type)}>"
    return str(t)


def _unit(column: str) -> str:
    """A vital's unit for its own column and its aggregates (not for counts)."""
    if column.endswith("_count"):
        return ""
    for vital, unit in _UNITS.items():
        if column == vital or column.startswith(f"{vital}_"):
            return unit
    return ""


def render() -> str:
    out = [BEGIN]
    for layer, spec in c.TABLES.items():
        part = ", ".join(spec.partition_by) or "none"
        out += [
            "",
            f"### `{spec.name}` (`{layer}`; partitioned by {part})",
            "",
            "| column | type | null | unit |",
            "|---|---|---|---|",
        ]
        for f in spec.schema:
            out.append(
                f"| `{f.name}` | {_type(f.type)} | {'yes' if f.nullable else 'no'} | {_unit(f.name)} |"
            )
    out.append(END)
    return "\n".join(out)


def write(doc: Path = Path("docs/data-model.md")) -> None:
    """Replace the generated section of ``doc`` in place."""
    text = doc.read_text()
    doc.write_text(text[: text.index(BEGIN)] + render() + text[text.index(END) + len(END) :])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.stdout.write(render() + "\n")
