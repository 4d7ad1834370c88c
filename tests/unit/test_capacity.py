"""The capacity model's arithmetic (bench/capacity.py): relations that must hold, not prices."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bench import capacity as cap


def _plan(**workload: object) -> cap.CapacityPlan:
    return cap.plan(cap.Workload(**workload), cap.Measured(), cap.Prices())  # type: ignore[arg-type]


def test_doubling_patients_doubles_pubsub_bytes_and_bigquery_rows():
    one, two = _plan(patients=50_000), _plan(patients=100_000)
    assert two.pubsub.publish_billed_bytes_s == pytest.approx(2 * one.pubsub.publish_billed_bytes_s)
    assert two.pubsub.retained_gib == pytest.approx(2 * one.pubsub.retained_gib)
    assert two.bq_rows_per_s["gold_patient_summary"] == pytest.approx(
        2 * one.bq_rows_per_s["gold_patient_summary"]
    )
    assert two.vcpus >= 2 * one.vcpus - 1


def test_envelopes_cut_messages_and_billed_bytes():
    p = _plan(envelope_readings=500)
    assert p.pubsub.messages_per_s == pytest.approx(p.readings_per_s / 500)
    assert p.pubsub_unbatched.messages_per_s == pytest.approx(p.readings_per_s)
    # One small message per request is billed the 1000-byte minimum.
    assert p.pubsub_unbatched.publish_billed_bytes_s == pytest.approx(1000 * p.readings_per_s)
    assert p.pubsub.throughput_usd_month < p.pubsub_unbatched.throughput_usd_month


def test_gold_rows_count_minute_and_hour_windows_per_patient_per_commit():
    w = cap.Workload(patients=1000, commit_interval_s=5.0, gold_windows_s=(60, 3600))
    # Each patient: its current minute and hour, plus the closing minute 1 time in 12, hour 1 in 720.
    assert cap.gold_rows_per_commit(w, 1000) == pytest.approx(1000 * (2 + 5 / 60 + 5 / 3600))
    p = cap.plan(w, cap.Measured(), cap.Prices())
    assert p.bq_rows_per_s["gold_patient_summary"] == pytest.approx(1000 * (2 + 5 / 60 + 5 / 3600) / 5)


def test_legacy_streaming_bills_at_least_one_kilobyte_a_row():
    small = _plan(gold_row_bq_bytes=100)
    smaller = _plan(gold_row_bq_bytes=10)
    assert small.bq_legacy_gib_month == pytest.approx(smaller.bq_legacy_gib_month)
    assert small.bq_write_api_gib_month > smaller.bq_write_api_gib_month


def test_vcpus_follow_the_measured_rate_and_the_stated_factors():
    w, m = cap.Workload(patients=10_000), cap.Measured(pipeline_readings_per_cpu_s=1000.0)
    a = cap.Assumptions(dataflow_core_factor=0.5, headroom=2.0, vcpus_per_worker=4)
    p = cap.plan(w, m, cap.Prices(), assumptions=a)
    assert p.vcpus == 40 and p.workers == 10  # 10,000 x 2 / (1000 x 0.5)
    faster = cap.plan(w, replace(m, sustained_readings_per_core_s=2000.0), cap.Prices(), assumptions=a)
    assert faster.vcpus == 20


def test_shards_divide_per_shard_limits_but_not_shared_quotas():
    one, four = _plan(shards=1), _plan(shards=4)
    by_name = {lim.name: lim for lim in one.limits}
    for lim in four.limits:
        before = by_name[lim.name]
        if lim.per_shard:
            assert lim.utilisation == pytest.approx(before.utilisation / 4, rel=0.02)
        else:  # shared by the project; more shards mean more, smaller commits to GCS, never fewer
            assert lim.utilisation >= before.utilisation * 0.98
    assert four.vcpus == one.vcpus


def test_limits_are_sorted_worst_first_and_commit_cadence_follows_the_interval():
    p = _plan(commit_interval_s=10.0)
    utils = [lim.utilisation for lim in p.limits]
    assert utils == sorted(utils, reverse=True) and p.breaks_first is p.limits[0]
    assert p.commits_per_min["bronze"] == 6 and p.commits_per_min["gold (minutes + hours upserts)"] == 12


def test_from_results_reads_variant_a_and_growth_figures(tmp_path):
    doc = {
        "results": [
            {
                "name": "pipeline_core",
                "variants": [
                    {"label": "B naive Beam", "rows_per_s": 100.0},
                    {"label": "A this pipeline (Beam, 5,000-reading tables)", "rows_per_s": 3210.5},
                ],
            },
            {
                "name": "growth",
                "variants": [
                    {"group": "gold MERGE of one batch", "label": "N", "rows_per_s": 12_000.0},
                    {"group": "gold MERGE of one batch", "label": "10N", "rows_per_s": 9_000.0},
                    {"group": "read one day (silver)", "label": "after maintenance", "rows_per_s": 7e5},
                ],
            },
        ]
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    m = cap.Measured.from_results(path)
    assert m.pipeline_readings_per_cpu_s == 3210.5 and m.readings_per_core_s == 3210.5
    assert m.gold_merge_rows_per_s == 9_000.0 and m.lake_scan_rows_per_s == 7e5
    assert m.sustained_readings_per_core_s is None and m.source == str(path)


def test_from_results_takes_the_highest_sustained_load_that_held_per_pipeline_core(tmp_path):
    doc = {
        "results": [
            {"name": "pipeline_core", "variants": [{"label": "A this pipeline", "rows_per_s": 2000.0}]},
            {
                "name": "sustained_load",
                "variants": [],
                "config": {
                    "runs": [
                        {
                            "holds": True,
                            "readings_per_s": 200.0,
                            "processes": {"pipeline": {"cpu_cores": 0.5}},
                        },
                        {
                            "holds": True,
                            "readings_per_s": 1000.0,
                            "processes": {"pipeline": {"cpu_cores": 0.8}},
                        },
                        {
                            "holds": False,
                            "readings_per_s": 4000.0,
                            "processes": {"pipeline": {"cpu_cores": 1.0}},
                        },
                    ]
                },
            },
        ]
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    m = cap.Measured.from_results(path)
    assert m.sustained_readings_per_core_s == pytest.approx(1250.0)  # 1000 readings/s on 0.8 core
    assert m.readings_per_core_s == pytest.approx(1250.0) and m.pipeline_readings_per_cpu_s == 2000.0


def test_from_results_without_variant_a_fails_loudly(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [{"name": "pipeline_core", "variants": []}]}))
    with pytest.raises(ValueError, match="A this pipeline"):
        cap.Measured.from_results(path)


def test_main_prints_a_markdown_plan(tmp_path, capsys):
    assert cap.main([str(tmp_path / "missing.json"), "--patients", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| component | quantity | $/month | note |" in out and "Breaks first" in out


def test_workload_rejects_nonsense():
    with pytest.raises(ValueError):
        cap.Workload(patients=0)
    with pytest.raises(ValueError):
        cap.Workload(envelope_readings=0)
