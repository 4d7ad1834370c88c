"""The streaming graph as Dataflow would receive it, built offline (--dry_run)."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.beam_vitals import create_pipeline


def test_dataflow_dry_run_builds_the_whole_streaming_graph():
    options = PipelineOptions(
        [
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--project=vitals-demo-123",
            "--region=europe-west1",
            "--temp_location=gs://vitals-demo-temp/tmp",
            "--subscription=projects/vitals-demo-123/subscriptions/patient-vitals-beam",
            "--lake=gs://vitals-demo-lake/lake",
            "--bigquery-dataset=vitals-demo-123.vitals",
            "--alerts-topic=projects/vitals-demo-123/topics/vitals-alerts",
        ]
    )
    pipeline = create_pipeline(options)
    pipeline.run()
    proto = pipeline.runner.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    for stage in [
        "ReadEnvelopes/ReadPubSub",
        "ReadEnvelopes/DecodeEnvelopes",
        "BatchForCommit/Gather",
        "WriteBronze",
        "ValidateReadings/ParseCheckEnrichScore",
        "WriteQuarantine",
        "WriteDataQuality",
        "InsertSilver",
        "Summarize60s/EventTimeWindows",
        "Summarize60s/UnionPerWindow",
        "Summarize3600s/EventTimeWindows",
        "UpsertGold",
        "DeriveTrends",
        "StreamGoldToBigQuery/WriteBatches",
        "StreamDataQualityToBigQuery/WriteBatches",
        "WriteAlerts",
        "PublishAlerts/Publish",
        "StreamAlertsToBigQuery/WriteBatches",
    ]:
        assert stage in names, stage
    assert options.view_as(__import__("apache_beam").options.pipeline_options.StandardOptions).streaming
