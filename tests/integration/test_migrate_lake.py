"""migrate-lake: a lake an older version wrote (Silver and Gold with the raw patient_id, no identity
map) is copied into a new prefix the current version can write: the ids left behind, every key in the
identity map, every row kept."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.factories import ids_by_key, raw, reading
from vitals_lake import contract as c
from vitals_lake.config import LocalLake
from vitals_lake.engine import BatchEngine, EngineSettings
from vitals_lake.lake import Lake, SchemaEvolutionError
from vitals_lake.migrate import MigrationError, main, migrate_lake

if TYPE_CHECKING:  # imported at run time by pytest_plugins only, so pytest can rewrite its asserts
    from tests.gcs_server import LakeFactory

pytest_plugins = ("tests.gcs_server",)

KEY = b"0123456789abcdef0123456789abcdef"


def rows_of(lake: Lake, layer: c.Layer, *keys: str) -> list[dict]:
    table = lake.read(layer).select(c.TABLES[layer].schema.names)
    return table.sort_by([(k, "ascending") for k in keys]).to_pylist()


@pytest.fixture
def lakes(tmp_path: Path) -> tuple[Lake, Lake]:
    """(the lake as this version writes it, the same data as an older version wrote it)."""
    current = Lake(LocalLake(root=tmp_path / "current"))
    lines = [raw(reading(i, patient=f"P{i % 7:06d}")) for i in range(280)]
    from vitals_lake import envelope  # noqa: PLC0415

    bronze = envelope.to_bronze(envelope.records_from_lines(lines), ingest_time_us=0, ref_prefix="file:t")
    BatchEngine(current, settings=EngineSettings(time_rules=None), key=KEY).run(bronze, batch_id="b0")
    old_root = tmp_path / "old"
    old = Lake(LocalLake(root=old_root))
    ids = ids_by_key(current)
    for layer in c.TABLES:
        if layer == "patient_keys" or not current.exists(layer):
            continue  # an older lake has no identity map
        spec = c.TABLES[layer]
        table = DeltaTable(current.uri(layer)).to_pyarrow_table()  # with the layout column
        if layer in ("silver", "gold"):  # the older contract: the raw id beside the key
            table = table.append_column(
                pa.field(c.PATIENT_ID, pa.string(), nullable=False),
                pa.array([ids[k] for k in table[c.PATIENT_KEY].to_pylist()], pa.string()),
            )
        write_deltalake(old.uri(layer), table, partition_by=list(spec.lake_partition_by) or None)
    return current, old


def test_an_older_lake_is_refused_then_migrated_with_its_identity_map(lakes, tmp_path):
    current, old = lakes
    with pytest.raises(SchemaEvolutionError, match="patient_id: no longer in the contract"):
        old.ensure("silver")
    new = Lake(LocalLake(root=tmp_path / "new"))

    written = migrate_lake(old, new, batch_rows=100)  # several batches per table

    assert written[c.SILVER_TABLE] == current.count("silver") == 280
    assert written[c.PATIENT_KEYS_TABLE] == 7
    assert ids_by_key(new) == ids_by_key(current)
    first_seen = new.read("patient_keys")[c.FIRST_SEEN]
    assert pc.min(first_seen).as_py() == pc.min(current.read("silver")[c.TIMESTAMP]).as_py()
    for layer in c.TABLES:  # every table follows the contract, and the new lake takes writes
        new.ensure(layer)
    assert rows_of(new, "silver", c.EVENT_ID) == rows_of(current, "silver", c.EVENT_ID)
    assert rows_of(new, "gold", *c.GOLD_KEY) == rows_of(current, "gold", *c.GOLD_KEY)
    assert rows_of(new, "bronze", c.RECORD_REF) == rows_of(current, "bronze", c.RECORD_REF)
    assert c.PATIENT_ID not in new.read("silver").column_names
    # A second run into the same prefix is refused: a half-done migration starts again elsewhere.
    with pytest.raises(MigrationError, match="already holds rows"):
        migrate_lake(old, new)


def test_the_command_reports_rows_per_table(lakes, tmp_path, capsys):
    _, old = lakes
    target = tmp_path / "new"
    assert main(["--from", str(old.settings.root), "--to", str(target), "--log-level", "WARNING"]) == 0
    report = json.loads(capsys.readouterr().out)["rows_by_table"]
    assert report[c.SILVER_TABLE] == 280 and report[c.PATIENT_KEYS_TABLE] == 7
    assert main(["--from", str(old.settings.root), "--to", str(target)]) == 1
    assert "already holds rows" in capsys.readouterr().err
    assert main(["--from", str(old.settings.root), "--to", str(old.settings.root)]) == 2


def test_a_lake_migrates_onto_gcs(lakes, fake_gcs: tuple[LakeFactory, str]):
    """The new prefix on gs:// (fake-gcs-server): the same copy, through object storage."""
    current, old = lakes
    factory, _ = fake_gcs
    new = Lake(factory(f"migrated-{uuid.uuid4().hex[:8]}"))
    written = migrate_lake(old, new, batch_rows=100)
    assert written[c.SILVER_TABLE] == 280 and written[c.PATIENT_KEYS_TABLE] == 7
    assert ids_by_key(new) == ids_by_key(current)
    assert rows_of(new, "gold", *c.GOLD_KEY) == rows_of(current, "gold", *c.GOLD_KEY)
