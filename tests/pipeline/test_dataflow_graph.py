"""The streaming graph as Dataflow would receive it, built offline (--dry_run)."""

from __future__ import annotations

from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor

from pipelines.arrow_pickling import ArrowTableCoder
from pipelines.beam_vitals import create_pipeline


def test_dataflow_dry_run_builds_the_whole_streaming_graph():
    proto, options = _dry_run(
        [
            "--bigquery-dataset=vitals-demo-123.vitals",
            "--alerts-topic=projects/vitals-demo-123/topics/vitals-alerts",
        ]
    )
    names = {t.unique_name for t in proto.components.transforms.values()}
    for stage in [
        "ReadEnvelopes/ReadPubSub",
        "ReadEnvelopes/DecodeEnvelopes",
        "BatchForCommit/Gather",
        "WriteBronze",
        "GateReadings/ParseCheckEnrich",
        "AdvanceShards/GatherPerShard",
        "WriteQuarantine",
        "WriteDataQuality",
        "AdvanceShards/DedupScoreAlertInsert",
        "UpsertGold",
        "UpsertRolling",
        "DeriveDiagnosisHourly",
        "StreamGoldToBigQuery/WriteBatches",
        "StreamDataQualityToBigQuery/WriteBatches",
        "WriteAlerts",
        "PublishAlerts/Publish",
        "StreamAlertsToBigQuery/WriteBatches",
        "StreamPatientKeysToBigQuery/WriteBatches",  # the identity map, for the identity view
    ]:
        assert stage in names, stage
    assert options.view_as(__import__("apache_beam").options.pipeline_options.StandardOptions).streaming


def _dry_run(extra: list[str]):
    options = PipelineOptions(
        [
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--project=vitals-demo-123",
            "--region=europe-west1",
            "--temp_location=gs://vitals-demo-temp/tmp",
            "--subscription=projects/vitals-demo-123/subscriptions/patient-vitals-beam",
            "--lake=gs://vitals-demo-lake/lake",
            *extra,
        ]
    )
    pipeline = create_pipeline(options)
    pipeline.run()
    return pipeline.runner.proto_pipeline, options


def test_per_patient_state_is_keyed_by_patient_shard_on_dataflow():
    """The only stateful stage is the shard stage, fed by a GroupByKey on the patient shard; the
    ingest batches before it are spread over as many keys as there are shards."""
    from apache_beam.portability import common_urns  # noqa: PLC0415
    from apache_beam.portability.api import beam_runner_api_pb2  # noqa: PLC0415

    proto, _ = _dry_run(["--shards=16"])
    transforms = proto.components.transforms
    stateful = []
    for t in transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            if payload.state_specs:
                stateful.append((t.unique_name, set(payload.state_specs)))
    assert stateful == [("AdvanceShards/DedupScoreAlertInsert/ParDo(AdvanceShardFn)", {"owner"})]
    names = {t.unique_name for t in transforms.values()}
    assert "AdvanceShards/GatherPerShard" in names
    assert not any("OneWriter" in n for n in names)  # the old single-key batching step


def test_the_keys_the_graph_uses_spread_over_every_shard():
    """What the graph keys by, run on real rows: ingest batches spread over all shards, and valid
    readings go to the patient's shard (many patients -> every shard, one patient -> one shard)."""
    import pyarrow as pa  # noqa: PLC0415

    from pipelines.batching import _SpreadKey, table_fingerprint  # noqa: PLC0415
    from vitals_lake import contract as c  # noqa: PLC0415
    from vitals_lake.pseudonym import pseudonymise  # noqa: PLC0415
    from vitals_lake.sharding import split_by_shard  # noqa: PLC0415

    spread = _SpreadKey(8, table_fingerprint)
    tables = [pa.table({c.RAW: [f'{{"n": {i}}}'.encode()]}) for i in range(400)]
    assert {next(spread.process(t))[0] for t in tables} == set(range(8))
    ids = pa.array([f"P-{i:04d}" for i in range(2000)] + ["P-0007"] * 50)
    rows = pa.table({c.PATIENT_ID: ids, c.PATIENT_KEY: pseudonymise(ids, key=b"k" * 32)})
    parts = split_by_shard(rows, shards=8)
    assert [s for s, _ in parts] == list(range(8))
    sizes = [t.num_rows for _, t in parts]
    assert min(sizes) > 2050 / 8 * 0.7  # HMAC spreads patients evenly
    homes = [s for s, t in parts if "P-0007" in t[c.PATIENT_ID].to_pylist()]
    assert len(homes) == 1


def test_tables_cross_the_stage_boundaries_with_the_arrow_coder():
    """The PCollections that carry the readings' tables through the shuffles are typed, so Beam codes
    them as Arrow IPC and estimates their size without encoding them (pipelines/arrow_pickling.py)."""
    proto_options = PipelineOptions(
        [
            "--subscription=projects/vitals-demo-123/subscriptions/s",
            "--lake=gs://vitals-demo-lake/lake",
            "--streaming",
        ]
    )
    pipeline = create_pipeline(proto_options)
    produced: dict[str, object] = {}

    class Outputs(PipelineVisitor):
        def visit_transform(self, node) -> None:
            for tag, pcoll in node.outputs.items():
                produced[node.full_label if tag is None else f"{node.full_label}[{tag}]"] = (
                    coders.registry.get_coder(pcoll.element_type)
                )

    pipeline.visit(Outputs())

    for label in (
        "BatchForCommit/SpreadOverShards",
        "BatchForCommit/NameBatch",
        "ConcatBatch",
        "GateReadings/ParseCheckEnrich/ParDo(GateReadingsFn)",
        "GateReadings/ParseCheckEnrich/ParDo(GateReadingsFn)[quarantine]",
        "AdvanceShards/NameShardBatch",
        "AdvanceShards/DedupScoreAlertInsert/ParDo(AdvanceShardFn)[gold]",
        "AdvanceShards/DedupScoreAlertInsert/ParDo(AdvanceShardFn)[alerts]",
        "BatchGold/SpreadOverShards",
    ):
        assert ArrowTableCoder.__name__ in repr(produced[label]), (label, produced[label])
