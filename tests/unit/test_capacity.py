"""The capacity model's arithmetic (bench/capacity.py): relations that must hold, not prices."""

from __future__ import annotations

import json
import math
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
    assert p.vcpus == 40 and p.workers == 10  # 10,000 x 2 / (1000 x 0.5): the memory stays in the workers
    assert p.state_vcpus == 0 and p.state_io_bytes_per_s == 0
    faster = cap.plan(w, replace(m, sustained_readings_per_core_s=2000.0), cap.Prices(), assumptions=a)
    assert faster.vcpus == 20


def test_state_in_the_runner_is_coded_whole_every_interval_and_costs_vcpus():
    w, m = cap.Workload(patients=10_000), cap.Measured(pipeline_readings_per_cpu_s=1000.0)
    a = cap.Assumptions(dataflow_core_factor=0.5, headroom=2.0, vcpus_per_worker=4, state_in_runner=True)
    p = cap.plan(w, m, cap.Prices(), assumptions=a)
    assert p.reading_vcpus == pytest.approx(20.0)
    # The first version: every interval each shard's state is read back and written whole.
    assert p.state_io_bytes_per_s == pytest.approx(2 * p.state_bytes / 5)
    coding = p.state_bytes / 5 * (m.state_encode_s_per_byte + m.state_decode_s_per_byte)
    assert p.state_vcpus == pytest.approx(coding / 0.5)
    assert p.vcpus == math.ceil((20.0 + p.state_vcpus) * 2) and p.workers == math.ceil(p.vcpus / 4)
    names = {lim.name for lim in p.limits}
    assert "Shard state as one Streaming Engine value" in names
    assert "Shard state as one Streaming Engine value" not in {lim.name for lim in _plan().limits}
    half = cap.plan(w, m, cap.Prices(), assumptions=replace(a, state_written_fraction=0.5))
    assert half.state_io_bytes_per_s == pytest.approx(p.state_io_bytes_per_s / 2)
    assert half.state_vcpus == pytest.approx(p.state_vcpus / 2)


def test_shards_divide_shard_limits_and_never_relieve_the_others():
    one, four = _plan(shards=16), _plan(shards=64)
    by_name = {lim.name: lim for lim in one.limits}
    for lim in four.limits:
        before = by_name[lim.name]
        if lim.relieved_by == "shards":
            assert lim.utilisation == pytest.approx(before.utilisation / 4, rel=0.02)
        elif lim.relieved_by != "workers":  # finer shards spread memory more evenly over the workers
            # Committers, rebuilds, quotas: more shards mean more, smaller commits and reads, never less.
            assert lim.utilisation >= before.utilisation * 0.98
    assert four.vcpus == one.vcpus and four.state_bytes == pytest.approx(one.state_bytes)


def test_pipelines_divide_the_committers():
    one, four = _plan(pipelines=1), _plan(pipelines=4)
    committers = [lim for lim in one.limits if lim.relieved_by == "pipelines"]
    assert {lim.name.split(":")[0] for lim in committers} == {"Gold committer", "Rolling committer"}
    by_name = {lim.name: lim for lim in four.limits}
    for lim in committers:
        assert by_name[lim.name].utilisation == pytest.approx(lim.utilisation / 4)
    assert four.pipelines_needed == pytest.approx(one.pipelines_needed, abs=1)


def test_gold_committer_grows_with_the_hours_it_rewrites():
    # Gold and rolling are partitioned by hour: a MERGE rewrites at most the current hour.
    assert cap.Assumptions().gold_rewritten_hours == 1.0
    m, p = cap.Measured(), cap.Prices()
    w = cap.Workload(patients=1000)

    def gold(hours: float) -> float:
        plan = cap.plan(w, m, p, assumptions=cap.Assumptions(gold_rewritten_hours=hours))
        return next(lim for lim in plan.limits if lim.name.startswith("Gold committer")).needed

    base = cap.gold_rows_per_commit(w, 1000) / m.gold_merge_rows_per_s / 5
    day = 1000 * (1440 + 24)  # minute and hour rows of one patient-day
    assert gold(24) == pytest.approx(base + day / m.gold_rewrite_rows_per_s / 5)
    assert gold(1) == pytest.approx(base + day / 24 / m.gold_rewrite_rows_per_s / 5)


def test_state_per_patient_grows_with_the_reading_rate_through_the_event_ids():
    m = cap.Measured()
    slow = cap.state_bytes_per_patient(cap.Workload(readings_per_patient_per_s=0.1), m)
    fast = cap.state_bytes_per_patient(cap.Workload(readings_per_patient_per_s=1.0), m)
    # design.md: 100 KB at one reading per 10 s, the ids 17 KB then; 21.7 KB with their hash index
    assert slow == pytest.approx(69_000 + 13_500 + 21_721)
    assert fast - slow == pytest.approx(9 * 21_721)  # ten times the ids of the horizon


def test_the_busiest_worker_holds_its_share_of_whole_shards():
    p = _plan(patients=10_000)
    assert p.state_bytes == pytest.approx(10_000 * p.state_bytes_per_patient)
    assert p.shard_state_bytes == pytest.approx(p.state_bytes / 64 * 1.1)
    memory = next(lim for lim in p.limits if lim.name == "Shard memory in the busiest worker")
    assert memory.needed == pytest.approx(math.ceil(64 / p.workers) * p.shard_state_bytes * 1.2)


def test_a_rebuild_reads_every_patient_per_shard_unless_it_reads_its_own():
    def rebuild(**assumed: object) -> tuple[cap.Limit, cap.Limit]:
        a = cap.Assumptions(**assumed)  # type: ignore[arg-type]
        plan = cap.plan(cap.Workload(patients=10_000), cap.Measured(), cap.Prices(), assumptions=a)
        one = next(lim for lim in plan.limits if lim.name.startswith("One shard's memory rebuilt"))
        every = next(lim for lim in plan.limits if lim.name.startswith("New deployment"))
        return one, every

    one, every = rebuild()
    own, every_own = rebuild(restart_reads_own_shard_only=True)
    assert own.needed == pytest.approx(one.needed / 64) and every_own.needed == pytest.approx(
        every.needed / 64
    )
    assert one.relieved_by == "none" and own.relieved_by == "shards"
    # 24 h + 1 h + 25 min of every patient's readings, at the scan rate on a Dataflow vCPU.
    rows = 10_000 * (86_400 + 3_600 + 1_500)
    assert one.needed == pytest.approx(rows / (cap.Measured().lake_scan_rows_per_s * 0.7))
    assert every.needed >= one.needed


def test_delta_commits_per_table_follow_the_shards_and_one_committer():
    p = _plan(shards=64, commit_interval_s=5.0)
    for table in ("bronze", "dq_metrics", "silver", "silver_commits"):
        assert p.commits_per_min[table] == pytest.approx(64 * 12)
    assert p.commits_per_min["gold (minutes + hours, one MERGE)"] == 12
    assert p.commits_per_min["gold_patient_rolling"] == p.commits_per_min["gold_diagnosis_hourly"] == 12
    assert 0 < p.commits_per_min["alerts"] < 64 * 12  # only shards with an alert event commit
    busiest = next(lim for lim in p.limits if lim.name.startswith("Delta commits"))
    assert busiest.needed == pytest.approx(64 / 5)


def test_limits_are_sorted_worst_first_and_commit_cadence_follows_the_interval():
    p = _plan(commit_interval_s=10.0)
    utils = [lim.utilisation for lim in p.limits]
    assert utils == sorted(utils, reverse=True) and p.breaks_first is p.limits[0]
    assert p.commits_per_min["bronze"] == 64 * 6
    assert p.commits_per_min["gold (minutes + hours, one MERGE)"] == 6


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
    assert m.sustained_readings_per_core_s is None
    assert m.source.startswith("results.json: pipeline_core, growth")
    assert m.gold_rewrite_rows_per_s == cap.Measured().gold_rewrite_rows_per_s  # no lake_age: the default
    assert m.source == "results.json: pipeline_core, growth" and str(tmp_path) not in m.source


def test_from_results_prefers_the_marginal_rate_of_variant_a(tmp_path):
    variants = [
        {"label": "A this pipeline (Beam, 100,000-line replay batches)", "rows_per_s": 60_000.0},
        {"label": "A start-up: the pipeline on the first 200 readings", "rows_per_s": 50.0},
        {"label": "A marginal: full run minus the start-up run", "rows_per_s": 97_000.0},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [{"name": "pipeline_core", "variants": variants}]}))
    assert cap.Measured.from_results(path).pipeline_readings_per_cpu_s == 97_000.0


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


def test_lake_age_no_longer_sets_the_gold_rewrite_rate(tmp_path):
    # With the hour layout, lake_age's 6 h lake hardly rewrites anything: B minus A is not a rewrite
    # rate any more, so the model keeps the rate measured on the date-only layout.
    lake_age = {
        "name": "lake_age",
        "variants": [
            {"group": "gold CPU", "label": "A empty lake", "seconds": 1.0},
            {"group": "gold CPU", "label": "B 6 h lake, same engine", "seconds": 1.1},
        ],
        "config": {"hour_batches": 8, "lake_before_the_hour": {"gold": 180_000}},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [lake_age]}))
    with pytest.raises(ValueError, match="none of"):
        cap.Measured.from_results(path)


def test_from_results_with_nothing_it_knows_fails_loudly(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [{"name": "scoring", "variants": []}]}))
    with pytest.raises(ValueError, match="none of"):
        cap.Measured.from_results(path)


def test_main_prints_a_markdown_plan(tmp_path, capsys):
    assert cap.main([str(tmp_path / "missing.json"), "--patients", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| component | quantity | $/month | note |" in out and "Breaks first" in out
    assert "64 patient shards" in out and "| relieved by |" in out


def test_main_takes_shards_and_pipelines(capsys):
    assert cap.main(["/no/such/results.json", "--patients", "1000", "--shards", "8", "--pipelines", "2"]) == 0
    assert "8 patient shards, 2 pipeline(s)" in capsys.readouterr().out


def test_workload_rejects_nonsense():
    with pytest.raises(ValueError):
        cap.Workload(patients=0)
    with pytest.raises(ValueError):
        cap.Workload(envelope_readings=0)
    with pytest.raises(ValueError):
        cap.Workload(shards=0)
    with pytest.raises(ValueError):
        cap.Workload(pipelines=0)
