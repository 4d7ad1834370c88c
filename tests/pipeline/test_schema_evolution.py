"""Schema evolution: a lake written under an older contract (one without the diastolic pressure: its
Silver, Gold, rolling, diagnosis-hour and alert columns, and the mean arterial pressure derived from it)
runs on under the current contract. The tables gain the new columns, nothing stored is lost, and every
row equals a lake that had the current contract from the start, except the new columns of what the
older version wrote. docs/schema-evolution.md walks through the same steps for a new vital sign."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from pipelines.beam_vitals import run
from tests.factories import T0, raw, reading
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake, SchemaEvolutionError

NEW_VITAL = c.DIASTOLIC


def added_by_the_new_contract(name: str) -> bool:
    return name == NEW_VITAL or name.startswith(f"{NEW_VITAL}_") or name == c.MEAN_ARTERIAL_PRESSURE


def readings(first_minute: int, minutes: int) -> bytes:
    """Four patients at one reading every 10 s; a reading's event id follows from its time."""
    docs = [
        reading(
            i,
            patient=f"P{p:06d}",
            at=T0 + timedelta(seconds=10 * i),
            heart_rate=70 + (i + p) % 15,
            blood_pressure=f"{112 + i % 9}/{68 + (i * 3 + p) % 11}",
        )
        for p in range(4)
        for i in range(6 * first_minute, 6 * (first_minute + minutes))
    ]
    return b"\n".join(raw(d) for d in docs) + b"\n"


def downgrade(current: Path, old: Path) -> None:
    """The lake ``current`` as the older contract would have written it: the new columns left out."""
    for spec in c.TABLES.values():
        uri = current / spec.name
        if not DeltaTable.is_deltatable(str(uri)):
            continue
        rows = DeltaTable(str(uri)).to_pyarrow_table()
        rows = rows.drop_columns([n for n in rows.column_names if added_by_the_new_contract(n)])
        write_deltalake(
            str(old / spec.name), rows, partition_by=list(spec.lake_partition_by) or None, name=spec.name
        )


def sorted_rows(lake: Lake, layer: c.Layer, key: tuple[str, ...]) -> pa.Table:
    rows = lake.read(layer)
    return rows.sort_by([(k, "ascending") for k in key])


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, Lake]:
    """(evolved, control): the same two runs, the first under the older contract for ``evolved``."""
    tmp = tmp_path_factory.mktemp("evolution")
    (tmp / "a.jsonl").write_bytes(readings(0, 3))
    (tmp / "b.jsonl").write_bytes(readings(2, 3))  # overlaps the last minute of the first run
    control, first = tmp / "control", tmp / "first"
    for lake_dir in (control, first):
        run(["--input-jsonl", str(tmp / "a.jsonl"), "--lake", str(lake_dir)])
    evolved = tmp / "evolved"
    downgrade(first, evolved)
    assert not any(
        added_by_the_new_contract(n)
        for n in DeltaTable(str(evolved / c.SILVER_TABLE)).schema().to_arrow().names
    )
    for lake_dir in (control, evolved):
        run(["--input-jsonl", str(tmp / "b.jsonl"), "--lake", str(lake_dir)])
    return Lake(LocalLake(root=evolved)), Lake(LocalLake(root=control))


def test_every_table_gains_the_new_columns(lakes: tuple[Lake, Lake]) -> None:
    evolved, _ = lakes
    for layer, spec in c.TABLES.items():
        if evolved.exists(layer):
            names = pa.schema(DeltaTable(evolved.uri(layer)).schema().to_arrow()).names
            assert set(spec.lake_schema.names) <= set(names), layer


@pytest.mark.parametrize(
    ("layer", "key"),
    [
        ("silver", (c.EVENT_ID,)),
        ("gold", c.GOLD_KEY),
        ("rolling", c.ROLLING_KEY),
        ("diagnosis_hourly", c.DIAGNOSIS_HOURLY_KEY),
    ],
)
def test_nothing_is_lost_and_the_old_columns_are_unchanged(
    lakes: tuple[Lake, Lake], layer: c.Layer, key: tuple[str, ...]
) -> None:
    evolved, control = lakes
    got, want = sorted_rows(evolved, layer, key), sorted_rows(control, layer, key)
    assert got.num_rows == want.num_rows > 0
    kept = [
        n
        for n in want.column_names
        if not added_by_the_new_contract(n) and n not in (c.INGEST_TIME, c.UPDATED_AT, c.RECORD_REF)
    ]
    for name in kept:
        assert got[name].to_pylist() == want[name].to_pylist(), (layer, name)


def test_the_new_columns_hold_what_the_new_version_wrote(lakes: tuple[Lake, Lake]) -> None:
    evolved, control = lakes
    silver = sorted_rows(evolved, "silver", (c.EVENT_ID,))
    same = sorted_rows(control, "silver", (c.EVENT_ID,))
    old = pc.is_null(silver[NEW_VITAL])
    # The first run's rows read the new column as null; the second run's carry it, as the control's do.
    assert 0 < pc.sum(old).as_py() < silver.num_rows
    new = pc.invert(old)
    assert silver.filter(new)[NEW_VITAL].to_pylist() == same.filter(new)[NEW_VITAL].to_pylist()
    assert (
        silver.filter(new)[c.MEAN_ARTERIAL_PRESSURE].to_pylist()
        == same.filter(new)[c.MEAN_ARTERIAL_PRESSURE].to_pylist()
    )
    # Gold minutes only the second run saw are whole; the first run's minutes have no diastolic.
    gold = sorted_rows(evolved, "gold", c.GOLD_KEY)
    column = c.gold_column(NEW_VITAL, "mean")
    minutes = gold.filter(pc.equal(gold[c.WINDOW_SECONDS], 60))
    assert pc.sum(pc.is_valid(minutes[column])).as_py() > 0
    assert pc.sum(pc.is_null(minutes[column])).as_py() > 0


def test_a_change_that_is_not_additive_is_refused(tmp_path: Path) -> None:
    spec = c.TABLES["silver"]
    wrong = pa.schema([f.with_type(pa.string()) if f.name == c.HEART_RATE else f for f in spec.lake_schema])
    write_deltalake(str(tmp_path / spec.name), wrong.empty_table(), partition_by=list(spec.lake_partition_by))
    with pytest.raises(SchemaEvolutionError, match="heart_rate: string in the table"):
        Lake(LocalLake(root=tmp_path)).ensure("silver")


def test_a_column_the_contract_dropped_is_refused_with_the_rebuild_path(tmp_path: Path) -> None:
    """An alerts table an older version made still has patient_id (now the key only): appending without
    it cannot work, so the table is refused with the way forward, never half-written."""
    spec = c.TABLES["alerts"]
    older = pa.schema([*spec.lake_schema, pa.field(c.PATIENT_ID, pa.string(), nullable=False)])
    write_deltalake(str(tmp_path / spec.name), older.empty_table(), partition_by=list(spec.lake_partition_by))
    with pytest.raises(SchemaEvolutionError, match=r"patient_id: no longer in the contract.*rebuild it"):
        Lake(LocalLake(root=tmp_path)).ensure("alerts")
