"""Faults on the real local stack (Tansu + Pub/Sub emulator + the streaming pipeline as a subprocess).

The scenarios live in ``harness.faults`` so that ``make bench`` reports the same figures these
tests hold; here every check of their ``FaultReport`` must hold.

1. ``pipeline_kill``: the pipeline SIGKILLed mid-stream. Without recovery the records it had pulled
   are lost for good (the control: the scenario can fail); after ``pipelines.recovery`` rewinds the
   bridge's group to what the lake holds, Silver and Gold equal what the simulator sent: nothing lost,
   nothing doubled.
2. ``redelivery``: every envelope arrives three times; Silver keeps each reading once and counts
   exactly the repeats as duplicates removed.
3. ``poison``: valid readings, poison messages of many shapes, valid readings, into a running pipeline
   straight from Pub/Sub and through the Kafka bridge from Tansu: every valid reading in Silver, every
   poison input in quarantine under a named rule, the pipeline and the bridge still running.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.faults import FaultReport, pipeline_kill, poison, redelivery
from harness.stack import LocalStack

pytestmark = pytest.mark.timeout(300)


def _assert_every_check(report: FaultReport) -> None:
    print(f"\n{report.scenario}: {json.dumps(report.figures)} seconds={report.seconds:.1f}")
    assert report.checks, f"{report.scenario} checked nothing"
    assert report.ok, (
        f"{report.scenario}: failed {report.failed()}\n"
        f"figures {json.dumps(report.figures, indent=1)}\nnotes {report.notes}"
    )


def test_sigkill_mid_stream_then_rewind_loses_nothing_and_doubles_nothing(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    report = pipeline_kill.run_scenario(tmp_path, stack=local_stack)
    _assert_every_check(report)
    f = report.figures
    # The control held: the kill really lost records, which the rewind then brought back.
    assert f["lost_without_recovery_readings"] > 0 and f["rewind_offsets"] > 0
    assert f["lost"] == f["doubled"] == f["gold_minutes_mismatched"] == 0
    assert f["silver_rows"] == f["gold_readings"] == f["readings_sent"]


def test_redelivery_storm_every_envelope_three_times_counts_stay_exact(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    report = redelivery.run_scenario(tmp_path, stack=local_stack)
    _assert_every_check(report)
    f = report.figures
    assert f["deliveries"] == 3 * f["envelopes"]
    assert f["bronze_rows"] == 3 * f["readings"]
    assert f["silver_rows"] == f["gold_readings"] == f["readings"]
    assert f["duplicates_removed"] == f["expected_duplicates"] == 2 * f["readings"]


def test_poison_mid_stream_stops_nothing_and_loses_no_reading(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    report = poison.run_scenario(tmp_path, quick=True, stack=local_stack)
    _assert_every_check(report)
    f = report.figures
    for path, sent in (("pubsub", len(poison.POISON_MESSAGES)), ("kafka", len(poison.POISON_RECORDS))):
        assert f[f"{path}_poison_sent"] == sent == f[f"{path}_quarantine_rows"]
        assert f[f"{path}_silver_rows"] == f[f"{path}_valid_sent"]
        assert f[f"{path}_bronze_rows"] == sent + f[f"{path}_valid_sent"]
    assert f["pubsub_largest_quarantined_bytes"] > 1 << 20  # the 1 MiB message, kept capped in quarantine
