"""Quarantine triage: see what was rejected and why, export records to fix, replay the fixes.

    python -m vitals_lake.quarantine summary --lake var/demo/lake
    python -m vitals_lake.quarantine export --lake var/demo/lake --rule heart_rate_possible_range \
        --out fix.jsonl
    # edit fix.jsonl (one raw record per line), then replay it through the same gate:
    python -m pipelines.beam_vitals --input-jsonl fix.jsonl --lake var/demo/lake

The fixed records enter as a new file source (Bronze gains them with a ``file:`` record_ref), pass
the same expectations, and reach Silver and Gold like any reading; the quarantine row stays as the
history of what arrived. Records that are not UTF-8 or contain a line break cannot be edited as a
line: they are exported base64-encoded to ``<out>.binary.jsonl`` for inspection. Quarantine keeps at
most the first 64 KiB of a record (``raw_truncated``); export takes such records whole from Bronze.
A record is exported once even when several of its parts (FHIR Bundle entries) were rejected.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from vitals_lake import contract as c
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, lake_from_uri
from vitals_lake.lake import Lake


def export(lake: Lake, out: Path, *, rule: str | None = None) -> tuple[int, int]:
    """Write quarantined records (optionally only those failing ``rule``); return (lines, binary)."""
    table = lake.read("quarantine", columns=[c.RAW, c.RULES, c.DETAIL, c.RECORD_REF, c.RAW_TRUNCATED])
    if rule is not None and table.num_rows:
        rules = table[c.RULES].combine_chunks()
        hits = pc.filter(pc.list_parent_indices(rules), pc.equal(pc.list_flatten(rules), rule))
        table = table.take(pc.unique(hits))
    whole = _whole_records(lake, table)
    lines: list[bytes] = []
    binary: list[bytes] = []
    seen: set[str] = set()
    for row in table.to_pylist():
        if row[c.RECORD_REF] in seen:
            continue
        seen.add(row[c.RECORD_REF])
        raw: bytes = whole.get(row[c.RECORD_REF], row[c.RAW]) if row[c.RAW_TRUNCATED] else row[c.RAW]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and "\n" not in text and "\r" not in text:
            lines.append(raw)
        else:
            entry = {c.RECORD_REF: row[c.RECORD_REF], c.RULES: row[c.RULES], c.DETAIL: row[c.DETAIL]}
            binary.append(orjson.dumps({**entry, "raw_base64": base64.b64encode(raw).decode("ascii")}))
    out.write_bytes(b"".join(line + b"\n" for line in lines))
    if binary:
        out.with_suffix(".binary.jsonl").write_bytes(b"".join(b + b"\n" for b in binary))
    return len(lines), len(binary)


def _whole_records(lake: Lake, table: pa.Table) -> dict[str, bytes]:
    """The full bytes, from Bronze, of the quarantined records that quarantine keeps only the start of."""
    refs = pc.filter(table[c.RECORD_REF], table[c.RAW_TRUNCATED]) if table.num_rows else []
    if not len(refs):
        return {}
    bronze = lake.read("bronze", columns=[c.RECORD_REF, c.RAW])
    hits = bronze.filter(pc.is_in(bronze[c.RECORD_REF], value_set=pa.array(pc.unique(refs))))
    return dict(zip(hits[c.RECORD_REF].to_pylist(), hits[c.RAW].to_pylist(), strict=True))


def summary(lake: Lake) -> dict[str, int]:
    rules = lake.read("quarantine", columns=[c.RULES])[c.RULES]
    return dict(Counter(pc.list_flatten(rules).to_pylist()).most_common()) if len(rules) else {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitals_lake.quarantine", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="quarantined records per rule")
    s.add_argument("--lake", required=True)
    e = sub.add_parser("export", help="write quarantined records, one per line, to fix and replay")
    e.add_argument("--lake", required=True)
    e.add_argument("--rule", help="only records that failed this rule")
    e.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        lake = Lake(lake_from_uri(args.lake))
    except ConfigError as exc:
        return usage_error(parser, str(exc))
    if args.command == "summary":
        for rule, n in summary(lake).items():
            print(f"{n:>8,}  {rule}")
        return 0
    lines, binary = export(lake, args.out, rule=args.rule)
    print(
        f"{lines} records written to {args.out}"
        + (f"; {binary} binary ones to *.binary.jsonl" if binary else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
