"""Each job touches only the lake tables it is granted (vitals_lake/access.py, which Terraform grants
per table): the pipeline, the admissions loader and training run on one local lake, and every table
each opens or commits to is recorded."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from ml.train import silver_from_lake
from pipelines import load_admissions
from pipelines.beam_vitals import run
from tests.pipeline.test_enrichment import write_landing, write_readings
from vitals_lake import contract as c
from vitals_lake.access import IDENTITY_LAYERS, LAKE_ACCESS, ROLES, Principal, grants, writes
from vitals_lake.config import LocalLake
from vitals_lake.lake import Lake


def commits(root: Path) -> dict[c.Layer, int]:
    """Commit files per table of the lake at ``root`` (0 where it does not exist)."""
    settings = LocalLake(root=root)  # not through Lake.uri, which the test records
    log = {layer: Path(settings.table_uri(spec.name)) / "_delta_log" for layer, spec in c.TABLES.items()}
    return {layer: len(list(path.glob("*.json"))) for layer, path in log.items()}


def test_each_job_touches_only_the_tables_it_is_granted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: dict[Principal, set[c.Layer]] = defaultdict(set)
    job: list[Principal] = ["pipeline"]
    table_uri = Lake.uri

    def recording_uri(self: Lake, layer: c.Layer) -> str:  # every read and write names its table here
        opened[job[0]].add(layer)
        return table_uri(self, layer)

    monkeypatch.setattr(Lake, "uri", recording_uri)
    root = tmp_path / "lake"
    landing, mapping = write_landing(tmp_path)
    write_readings(tmp_path / "r.jsonl")
    written: dict[Principal, set[c.Layer]] = {}

    def as_job(principal: Principal, action: Callable[[], object]) -> None:
        job[0] = principal
        before = commits(root)
        action()
        after = commits(root)
        written[principal] = {layer for layer in c.TABLES if after[layer] != before[layer]}

    as_job("pipeline", lambda: run(["--input-jsonl", str(tmp_path / "r.jsonl"), "--lake", str(root)]))
    args = ["--lake", str(root), "--landing", str(landing), "--reference", str(mapping)]
    as_job("admissions", lambda: load_admissions.main(args))
    as_job("training", lambda: silver_from_lake(str(root)))

    for principal in ("pipeline", "admissions", "training"):
        assert opened[principal] <= set(LAKE_ACCESS[principal]), principal
        assert written[principal] <= set(writes(principal)), principal
    # The recording sees what each job does: the pipeline read the admissions (it enriches with
    # them) and wrote the key map; the loader back-filled Gold; training read Silver and the map.
    assert "patients" in opened["pipeline"] and "patients" not in written["pipeline"]
    assert written["pipeline"] & IDENTITY_LAYERS == {"patient_keys"}
    assert written["admissions"] == {"bronze_admissions", "diagnoses", "patients", "gold"}
    assert opened["training"] == {"silver", "patient_keys"} and not written["training"]


def test_the_identity_tables_are_granted_only_to_who_needs_the_raw_id() -> None:
    identity = {c.TABLES[layer].name for layer in IDENTITY_LAYERS}
    assert identity == {c.PATIENTS_TABLE, c.PATIENT_KEYS_TABLE, "bronze_admissions"}
    on_identity = {(g["principal"], g["table"], g["role"]) for g in grants() if g["table"] in identity}
    viewer, user = ROLES["read"], ROLES["write"]
    assert on_identity == {
        ("pipeline", c.PATIENTS_TABLE, viewer),
        ("pipeline", c.PATIENT_KEYS_TABLE, user),
        ("admissions", "bronze_admissions", user),
        ("admissions", c.PATIENTS_TABLE, user),
        ("training", c.PATIENT_KEYS_TABLE, viewer),  # the key map only: no names, no admission dates
        *(("maintenance", t, user) for t in identity),
        *(("operators", t, user) for t in identity),
    }
    # Every table is somebody's to write, and maintenance's (retention, compaction, vacuum).
    assert {g["table"] for g in grants() if g["role"] == user} == {s.name for s in c.TABLES.values()}
    assert writes("maintenance") == tuple(c.TABLES)
    assert not writes("training")
