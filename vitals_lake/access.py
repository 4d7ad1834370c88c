"""Who may read and write which lake table: the least each job needs, declared once.

The lake bucket grants nothing at bucket level. Each table is a GCS managed folder with its own IAM,
and Terraform grants exactly what :data:`LAKE_ACCESS` says (through ``generated/names.json``), so
the identity tables (``silver_patients``, ``patient_keys``, ``bronze_admissions``) are readable only
by the jobs that need the raw id: the pipeline (its gate keys the readings and appends new keys), the
admissions loader, maintenance, the operators who run ``forget-patient``, and training, which reads
the key map (not names or admission dates) because its labels name patients by id.

The pipeline creates only the tables it writes (:func:`writes`), and a test runs each job on a local
lake and checks that it touched no table beyond its row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

from vitals_lake import contract as c

Principal = Literal["pipeline", "admissions", "maintenance", "training", "operators"]
Access = Literal["read", "write"]

# Tables that hold the raw patient id or the admission identity (name, dates).
IDENTITY_LAYERS: Final[frozenset[c.Layer]] = frozenset({"patients", "patient_keys", "bronze_admissions"})

# The stream's tables: the gate's and the shards' raw and clean rows, then the shards' other commits.
_STREAM_IN: Final[tuple[c.Layer, ...]] = ("bronze", "quarantine", "silver", "silver_commits", "dq_metrics")
_STREAM_OUT: Final[tuple[c.Layer, ...]] = ("gold", "rolling", "diagnosis_hourly", "alerts", "patient_keys")
_EVERY_TABLE: Final[dict[c.Layer, Access]] = dict.fromkeys(c.TABLES, "write")

_DECLARED: Final[dict[Principal, dict[c.Layer, Access]]] = {
    # The stream's tables; the admissions it enriches readings with, read only.
    "pipeline": {
        **dict.fromkeys(_STREAM_IN + _STREAM_OUT, "write"),
        "patients": "read",
    },
    # Admission files, the diagnosis mapping, the patients table, and Gold's back-fill.
    "admissions": dict.fromkeys(("bronze_admissions", "diagnoses", "patients", "gold"), "write"),
    # Compaction, retention and vacuum touch every table.
    "maintenance": _EVERY_TABLE,
    # Silver to learn from, and the key map to match labels (named by patient id) to its rows.
    "training": {"silver": "read", "patient_keys": "read"},
    # People who run forget-patient, recovery, quarantine replays, inspect, and migrate-lake (the old
    # prefix stays granted while Terraform's lake_previous_prefix names it).
    "operators": _EVERY_TABLE,
}
LAKE_ACCESS: Final[Mapping[Principal, Mapping[c.Layer, Access]]] = MappingProxyType(
    {principal: MappingProxyType(tables) for principal, tables in _DECLARED.items()}
)

ROLES: Final[Mapping[Access, str]] = MappingProxyType(
    {"read": "roles/storage.objectViewer", "write": "roles/storage.objectUser"}
)


def writes(principal: Principal) -> tuple[c.Layer, ...]:
    """The tables ``principal`` writes, in the contract's order."""
    return tuple(layer for layer in c.TABLES if LAKE_ACCESS[principal].get(layer) == "write")


def grants() -> list[dict[str, str]]:
    """One row per (principal, table): the managed-folder role Terraform grants, by table name."""
    return [
        {"principal": principal, "table": c.TABLES[layer].name, "role": ROLES[access]}
        for principal in get_args(Principal)
        for layer, access in LAKE_ACCESS[principal].items()
    ]
