"""Patient-vitals simulator: a seeded cohort of monitored patients streaming readings with clinical
episodes (ground-truth labels) and the imperfections of a real device fleet.

Library use::

    from simulator import SimulationConfig, ListSink, run_simulation

    sink = ListSink()
    manifest = run_simulation(SimulationConfig(patients=50, duration_seconds=600, seed=7), sink)
"""

from __future__ import annotations

from simulator.cohort import DIAGNOSES, WARDS, Patient, make_cohort
from simulator.engine import LABELS_FILE, MANIFEST_FILE, Simulation, SimulationConfig, run_simulation
from simulator.faults import MALFORMED_KINDS, FaultRates, MalformedKind
from simulator.manifest import Manifest
from simulator.sinks import JsonlSink, KafkaSink, ListSink, NullSink, PubSubSink, Sink, SinkError
from vitals_lake.envelope import read_jsonl
from vitals_lake.labels import Episode, EpisodeType, read_labels

__all__ = [
    "DIAGNOSES",
    "LABELS_FILE",
    "MALFORMED_KINDS",
    "MANIFEST_FILE",
    "WARDS",
    "Episode",
    "EpisodeType",
    "FaultRates",
    "JsonlSink",
    "KafkaSink",
    "ListSink",
    "MalformedKind",
    "Manifest",
    "NullSink",
    "Patient",
    "PubSubSink",
    "Simulation",
    "SimulationConfig",
    "Sink",
    "SinkError",
    "make_cohort",
    "read_jsonl",
    "read_labels",
    "run_simulation",
]
