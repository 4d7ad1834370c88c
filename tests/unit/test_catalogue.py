"""The catalogue: every table and column of the lake and the warehouse is described, from the contract,
and the descriptions reach BigQuery (generated schemas, names.json) and the lake's Delta tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.infra_names import GENERATED_DIR, NAMES_FILE
from vitals_lake import catalogue
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake
from warehouse import views
from warehouse.bigquery import bigquery_schema
from warehouse.tables import DEAD_LETTER_SCHEMA, DEAD_LETTER_TABLE, WAREHOUSE_TABLES


def every_column() -> list[tuple[str, str]]:
    out = [(spec.name, f.name) for spec in c.TABLES.values() for f in spec.lake_schema]
    out += [(t.name, f.name) for t in WAREHOUSE_TABLES.values() for f in t.schema]
    out += [(DEAD_LETTER_TABLE, f.name) for f in DEAD_LETTER_SCHEMA]
    return out


@pytest.mark.parametrize(("table", "column"), every_column())
def test_every_column_of_every_table_is_described(table: str, column: str) -> None:
    text = catalogue.describe(column)
    assert len(text) > 15 and text.endswith("."), (table, column, text)


def test_every_table_is_described() -> None:
    names = {spec.name for spec in c.TABLES.values()} | set(WAREHOUSE_TABLES) | {DEAD_LETTER_TABLE}
    for name in names:
        assert catalogue.table_description(name)
    with pytest.raises(KeyError, match=r"catalogue\.py"):
        catalogue.describe("a_column_nobody_described")


@pytest.mark.parametrize("vital", c.VITAL_SIGNS, ids=lambda v: v.name)
def test_vital_columns_carry_the_contracts_unit_loinc_and_ranges(vital: c.VitalSign) -> None:
    own = catalogue.describe(vital.name)
    for fact in (vital.unit, vital.loinc, f"{vital.possible[0]:g}-{vital.possible[1]:g}"):
        assert fact in own
    assert f"{vital.normal[0]:g}-{vital.normal[1]:g}" in own
    for stat in ("mean", "min", "max", "last"):
        derived = catalogue.describe(c.gold_column(vital.name, stat))
        assert vital.unit in derived and vital.loinc in derived
    assert vital.unit in catalogue.describe(c.rolling_column(vital.name))


def test_bigquery_gets_every_description() -> None:
    generated = GENERATED_DIR / "bq_schemas"
    for path in sorted(generated.glob("*.json")):
        fields = json.loads(path.read_text())
        undescribed = [f["name"] for f in fields if not f.get("description")]
        assert not undescribed, (path.name, undescribed)
    gold = json.loads((generated / f"{c.GOLD_TABLE}.json").read_text())
    assert len(gold) == len(c.GOLD_SCHEMA) >= 58
    assert all(f.description for f in bigquery_schema(c.ALERTS_SCHEMA))
    bq = json.loads((GENERATED_DIR / NAMES_FILE).read_text())["bigquery"]
    assert all(entry["description"] for entry in bq["tables"].values())
    assert set(bq["view_descriptions"]) == set(bq["views"])
    assert bq["view_descriptions"]["patient_risk_scores"] == views.description("patient_risk_scores")


def test_a_new_delta_table_carries_its_description(tmp_path: Path) -> None:
    lake = Lake(LocalLake(root=tmp_path))
    table = lake.ensure("gold")
    assert table.metadata().description == catalogue.table_description(c.GOLD_TABLE)
