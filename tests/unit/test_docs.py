from __future__ import annotations

from pathlib import Path

from vitals_lake import contract as c
from vitals_lake import expectations as ex
from vitals_lake.schema_doc import BEGIN, END, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-model.md"


def test_data_model_columns_are_generated_from_the_contract():
    text = DOC.read_text()
    section = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert section == render(), "docs/data-model.md is stale: python -m vitals_lake.schema_doc --write"


def test_every_table_and_drop_rule_is_described():
    text = DOC.read_text()
    for spec in c.TABLES.values():
        assert f"`{spec.name}`" in text
    for name in (*ex.PARSER_RULES, *ex.TIME_RULES, ex.RULE_QUARANTINE_RATIO):
        assert name in text, name
    for exp in ex.SILVER_EXPECTATIONS:
        generic = exp.name
        for suffix in ("_finite", "_possible_range", "_clinically_normal"):
            if exp.name.endswith(suffix) and exp.column in c.VITAL_NAMES:
                generic = f"<vital>{suffix}"
        assert generic in text, exp.name
