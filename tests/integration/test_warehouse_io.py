"""WriteWarehouse in a small batch pipeline (FnApiRunner) against the BigQuery emulator: rows land, in-batch
repeats count as duplicates, a row the warehouse refuses is counted as rejected and dead-lettered."""

from __future__ import annotations

import json
import time
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from deploy.infra_names import GENERATED_DIR, NAMES_FILE
from harness.stack.bigquery import BigQueryEmulator
from pipelines.warehouse_io import METRICS_NAMESPACE, WriteWarehouse, open_sink
from tests.integration.test_bigquery_sink import (
    drifted_gold_table,
    fresh_settings,
    gold_row,
    gold_table,
    query,
)
from vitals_lake import contract as c
from warehouse.bigquery import BigQuerySink, make_client
from warehouse.sink import WriteResult
from warehouse.tables import DEAD_LETTER_TABLE


@pytest.fixture(scope="module")
def emulator(bigquery_emulator: BigQueryEmulator) -> BigQueryEmulator:
    """The session's emulator (tests/conftest.py); each test uses a dataset of its own."""
    return bigquery_emulator


def summary(batch_id: str, result: WriteResult) -> tuple[str, int, int, int]:
    return batch_id, result.inserted, result.duplicates, result.rejected


def counters(result: Any) -> dict[str, int]:
    metrics = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    return {m.key.metric.name: m.committed for m in metrics}


def test_write_warehouse_counts_every_row(emulator: BigQueryEmulator) -> None:
    settings = fresh_settings(emulator.endpoint)
    client = make_client(settings)
    drifted_gold_table(client, settings)  # `bed` INT64 in the warehouse: "ICU-03" is refused
    batch_a = gold_table([gold_row(f"P{i:06d}", 0) for i in range(5)])
    batch_b = gold_table(
        [
            gold_row("P000010", 1),
            gold_row("P000010", 1),  # the same key and version twice in one batch
            gold_row("P000011", 1, bed="ICU-03"),
        ]
    )

    started = time.monotonic()
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    emitted = (
        pipeline
        | beam.Create([("batch-a", batch_a), ("batch-b", batch_b)])
        | WriteWarehouse(settings, c.GOLD_TABLE)
        | beam.MapTuple(summary)
    )
    assert_that(emitted, equal_to([("batch-a", 5, 0, 0), ("batch-b", 1, 1, 1)]))
    result = pipeline.run()
    result.wait_until_finish()
    print(f"\npipeline ran in {time.monotonic() - started:.2f} s")

    got = counters(result)
    assert got[f"{c.GOLD_TABLE}_inserted"] == 6
    assert got[f"{c.GOLD_TABLE}_duplicates"] == 1
    assert got[f"{c.GOLD_TABLE}_rejected"] == 1
    # ... under the name Terraform's warehouse dead-letter policy matches (names.json)
    suffix = json.loads((GENERATED_DIR / NAMES_FILE).read_text())["monitoring"]["pipeline_counters"]
    assert got[c.GOLD_TABLE + suffix["warehouse_rejected_suffix"]] == 1
    assert got[f"{c.GOLD_TABLE}_batches"] == 2

    landed = query(client, f"SELECT {c.PATIENT_KEY} FROM `{settings.table_ref(c.GOLD_TABLE)}` ORDER BY 1")
    assert [r[c.PATIENT_KEY] for r in landed] == [*(f"key-P{i:06d}" for i in range(5)), "key-P000010"]
    dead = query(client, f"SELECT table_name, row_json FROM `{settings.table_ref(DEAD_LETTER_TABLE)}`")
    assert [(d["table_name"], json.loads(d["row_json"])[c.PATIENT_KEY]) for d in dead] == [
        (c.GOLD_TABLE, "key-P000011")
    ]
    # setup() ran ensure(): the other tables exist now
    tables = {t.table_id for t in client.list_tables(settings.dataset_ref)}
    assert {c.ALERTS_TABLE, c.DQ_METRICS_TABLE, DEAD_LETTER_TABLE} <= tables
    client.close()


def test_open_sink_picks_the_sink_from_the_settings(emulator: BigQueryEmulator) -> None:
    sink = open_sink(fresh_settings(emulator.endpoint))
    assert isinstance(sink, BigQuerySink)
    sink.close()
    with pytest.raises(TypeError, match="sink_factory"):
        open_sink({"path": "warehouse.duckdb"})
    with pytest.raises(ValueError, match="unknown warehouse table"):
        WriteWarehouse(fresh_settings(emulator.endpoint), "no_such_table")


def test_a_sink_factory_plugs_another_warehouse(emulator: BigQueryEmulator) -> None:
    """Any WarehouseSink can be plugged in: here the BigQuery sink built by a factory of our own."""
    settings = fresh_settings(emulator.endpoint)
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    _ = (
        pipeline
        | beam.Create([("b1", gold_table([gold_row("P000001", 0)]))])
        | WriteWarehouse(settings, c.GOLD_TABLE, sink_factory=_factory)
    )
    result = pipeline.run()
    result.wait_until_finish()
    assert counters(result)[f"{c.GOLD_TABLE}_inserted"] == 1
    client = make_client(settings)
    assert query(client, f"SELECT COUNT(*) AS n FROM `{settings.table_ref(c.GOLD_TABLE)}`")[0]["n"] == 1
    client.close()


def _factory(settings: Any) -> BigQuerySink:
    return BigQuerySink(settings, remember_ids=10)
