"""Command-line options of the vitals pipeline (local DirectRunner and Dataflow alike)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
    _BeamArgumentParser,
)

from vitals_lake.alerting import AlertRule
from vitals_lake.config import ConfigError, LakeSettings, StreamSettings, lake_from_uri
from vitals_lake.engine import EngineSettings
from vitals_lake.readings import TimeRules
from vitals_lake.sharding import DATAFLOW_SHARDS, LOCAL_SHARDS, check_shards
from warehouse.settings import DEFAULT_LOCATION, BigQuerySettings

TOPIC_PATH = re.compile(r"projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/topics/[A-Za-z][-\w.~+%]{2,254}")

# Prism (the default behind "DirectRunner") downloads a binary at start-up and fails offline:
# name the runner that runs here.
LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"
LOCAL_BATCH_RUNNER = "FnApiRunner"
# A replay's batch: ~24 MB of payloads, and 7 commits (Bronze, quarantine, data quality) for an hour of
# 2,000 patients at 10 s; smaller batches pay a Delta commit per table each, larger ones hold more in memory.
REPLAY_BATCH_SIZE: Final = 100_000

# Beam's own options that a run of this pipeline sets, shown by ``--help`` after the pipeline's; every
# other Apache Beam option is accepted as well and passed on to Beam.
BEAM_HELP_OPTIONS: Final = (StandardOptions, GoogleCloudOptions, WorkerOptions, SetupOptions, DebugOptions)
# Options this pipeline no longer has, and why: given anyway, they are refused rather than ignored.
REMOVED_OPTIONS: Final = {
    "gold_window": "Gold's windows are fixed by the contract (one minute and one hour, both always"
    " written); the views and dashboards read those two",
}
BEAM_NOTE: Final = (
    "Any other Apache Beam pipeline option is accepted too and passed on to Beam:\n"
    "https://beam.apache.org/releases/pydoc/current/apache_beam.options.pipeline_options.html"
)
USAGE: Final = (
    "%(prog)s (--subscription SUB | --input-jsonl FILE | --input-bronze LAKE)\n"
    "         --lake LAKE [pipeline options] [Beam options]"
)


class VitalsOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # type: ignore[no-untyped-def]  # Beam's signature
        src = parser.add_argument_group("input (one of)")
        src.add_argument(
            "--subscription",
            help="Pub/Sub subscription to stream from: projects/P/subscriptions/S (streaming mode)",
        )
        src.add_argument(
            "--input-jsonl",
            "--input_jsonl",
            dest="input_jsonl",
            help="replay raw readings from a JSONL file (local or gs://), one reading per line (batch mode)",
        )
        src.add_argument(
            "--input-bronze",
            "--input_bronze",
            dest="input_bronze",
            metavar="LAKE",
            help="rebuild Silver and Gold from the Bronze table of this lake (batch mode; may equal --lake)",
        )
        parser.add_argument("--lake", help="lake root: a local directory or gs://bucket/prefix (required)")
        parser.add_argument(
            "--lake-service-account",
            "--lake_service_account",
            dest="lake_service_account",
            help="service-account JSON for gs:// lakes (default: application default credentials)",
        )
        d = StreamSettings()
        parser.add_argument(
            "--commit-interval",
            "--commit_interval",
            dest="commit_interval",
            type=float,
            default=d.commit_interval,
            help="seconds between Delta commits per table",
        )
        parser.add_argument(
            "--allowed-lateness",
            "--allowed_lateness",
            dest="allowed_lateness",
            type=int,
            default=d.allowed_lateness,
            help="seconds a late reading still updates Gold",
        )
        parser.add_argument(
            "--dedup-horizon",
            "--dedup_horizon",
            dest="dedup_horizon",
            type=int,
            default=d.dedup_horizon,
            help="seconds (event time) within which event_id duplicates are removed",
        )
        parser.add_argument(
            "--clock-skew",
            "--clock_skew",
            dest="clock_skew",
            type=int,
            default=d.clock_skew,
            help="seconds a reading may run ahead of its ingest time before it counts as in the future",
        )
        parser.add_argument(
            "--model-uri",
            "--model_uri",
            dest="model_uri",
            help="anomaly model artifact directory (local or gs://); new versions there are picked up live",
        )
        parser.add_argument(
            "--model-poll-seconds",
            "--model_poll_seconds",
            dest="model_poll_seconds",
            type=float,
            default=30.0,
            help="how often the model directory is checked for a new version",
        )
        parser.add_argument(
            "--alerts-topic",
            "--alerts_topic",
            dest="alerts_topic",
            help="projects/P/topics/vitals-alerts: publish alert events there (the notifier's trigger)",
        )
        parser.add_argument(
            "--bigquery-dataset",
            "--bigquery_dataset",
            dest="bigquery_dataset",
            help="PROJECT.DATASET: stream Gold and data-quality rows into BigQuery (streaming inserts)",
        )
        parser.add_argument(
            "--bigquery-endpoint",
            "--bigquery_endpoint",
            dest="bigquery_endpoint",
            help="a BigQuery emulator's URL (local runs and tests); credentials are then anonymous",
        )
        parser.add_argument(
            "--bigquery-location",
            "--bigquery_location",
            dest="bigquery_location",
            default=DEFAULT_LOCATION,
            help="location of the BigQuery dataset, e.g. EU or US",
        )
        parser.add_argument(
            "--bigquery-retry-deadline",
            "--bigquery_retry_deadline",
            dest="bigquery_retry_deadline",
            type=float,
            default=BigQuerySettings.retry_deadline,
            help="seconds one warehouse write retries transient failures (blips) before it gives up",
        )
        parser.add_argument(
            "--bigquery-outage-budget",
            "--bigquery_outage_budget",
            dest="bigquery_outage_budget",
            type=float,
            default=BigQuerySettings.outage_budget,
            help="seconds the warehouse writer keeps repeating a failed write while BigQuery is unreachable"
            " (an outage) before the bundle fails; 0: fail at once",
        )
        rule = AlertRule()
        for name, default, what in (
            (
                "alert_persistence_seconds",
                rule.persistence_seconds,
                "the alert condition must hold this long",
            ),
            ("alert_clear_seconds", rule.clear_seconds, "and be absent this long before an alert closes"),
            (
                "alert_cooldown_seconds",
                rule.cooldown_seconds,
                "no new alert for a patient this soon after one",
            ),
        ):
            parser.add_argument(
                f"--{name.replace('_', '-')}", f"--{name}", dest=name, type=float, default=default, help=what
            )
        parser.add_argument(
            "--shards",
            dest="shards",
            type=int,
            help=f"patient shards: the unit of parallelism and of pipeline state (default: {LOCAL_SHARDS}"
            f" locally, {DATAFLOW_SHARDS} on Dataflow; keep it when restarting a job, or state is rebuilt"
            " from the lake)",
        )
        parser.add_argument(
            "--run-id",
            "--run_id",
            dest="run_id",
            help="names this run's commit batches (default: random); reuse it only to resume the same run",
        )
        parser.add_argument(
            "--batch-size",
            "--batch_size",
            dest="batch_size",
            type=int,
            default=REPLAY_BATCH_SIZE,
            help="a replay's (file or Bronze) records per batch: each batch is read, checked and committed"
            f" to Bronze, quarantine and data quality together (default: {REPLAY_BATCH_SIZE:,})",
        )
        parser.add_argument(
            "--max-run-seconds",
            "--max_run_seconds",
            dest="max_run_seconds",
            type=float,
            help="local streaming only: cancel the pipeline after this many seconds",
        )


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Description and epilog as written; an option's default after its help when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.default in (None, False, argparse.SUPPRESS)
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def argument_parser(prog: str, description: str | None = None, epilog: str = "") -> argparse.ArgumentParser:
    """Every pipeline option, then Beam's options for a run (:data:`BEAM_HELP_OPTIONS`), as one parser:
    ``--help`` lists them all, and a malformed value is reported with the usage (exit 2)."""
    parser = _BeamArgumentParser(
        prog=prog,
        usage=USAGE,
        description=description,
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
        epilog=f"{epilog}\n\n{BEAM_NOTE}" if epilog else BEAM_NOTE,
    )
    parser._optionals.title = "pipeline options"
    VitalsOptions._add_argparse_args(parser)
    for options in BEAM_HELP_OPTIONS:
        group = parser.add_argument_group(f"Apache Beam ({options.__name__})")
        options._add_argparse_args(group)  # a group adds arguments as the parser does
    return parser


def removed_options(argv: Sequence[str]) -> list[str]:
    """The messages for options in ``argv`` that this pipeline no longer accepts."""
    given = {a.removeprefix("--").split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    return [
        f"--{name.replace('_', '-')} was removed: {why}"
        for name, why in REMOVED_OPTIONS.items()
        if name in given
    ]


def stream_settings(options: PipelineOptions) -> StreamSettings:
    o = options.view_as(VitalsOptions)
    return StreamSettings(
        commit_interval=o.commit_interval,
        allowed_lateness=o.allowed_lateness,
        dedup_horizon=o.dedup_horizon,
        clock_skew=o.clock_skew,
    )


def alerts_topic(options: PipelineOptions) -> str | None:
    topic = options.view_as(VitalsOptions).alerts_topic
    if topic and not TOPIC_PATH.fullmatch(topic):
        raise ConfigError(f"--alerts-topic must be projects/<project>/topics/<topic>, got {topic!r}")
    return topic or None


def alert_rule(options: PipelineOptions) -> AlertRule:
    o = options.view_as(VitalsOptions)
    try:
        return AlertRule(
            persistence_seconds=o.alert_persistence_seconds,
            clear_seconds=o.alert_clear_seconds,
            cooldown_seconds=o.alert_cooldown_seconds,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def bigquery_settings(options: PipelineOptions) -> BigQuerySettings | None:
    o = options.view_as(VitalsOptions)
    if not o.bigquery_dataset:
        if o.bigquery_endpoint:
            raise ConfigError("--bigquery-endpoint needs --bigquery-dataset PROJECT.DATASET")
        return None
    project, sep, dataset = o.bigquery_dataset.partition(".")
    if not sep:
        raise ConfigError(f"--bigquery-dataset must be PROJECT.DATASET, got {o.bigquery_dataset!r}")
    return BigQuerySettings(
        project=project,
        dataset=dataset,
        location=o.bigquery_location,
        api_endpoint=o.bigquery_endpoint,
        credentials="anonymous" if o.bigquery_endpoint else "default",
        retry_deadline=o.bigquery_retry_deadline,
        outage_budget=o.bigquery_outage_budget,
    )


def lake_settings(options: PipelineOptions) -> LakeSettings:
    o = options.view_as(VitalsOptions)
    if not o.lake:
        raise ConfigError("--lake is required: a local directory or gs://bucket/prefix")
    return lake_from_uri(o.lake, service_account_path=o.lake_service_account)


def is_streaming(options: PipelineOptions) -> bool:
    o = options.view_as(VitalsOptions)
    chosen = [bool(o.subscription), bool(o.input_jsonl), bool(o.input_bronze)]
    if sum(chosen) != 1:
        raise ConfigError("give exactly one input: --subscription, --input-jsonl or --input-bronze")
    return bool(o.subscription)


def finalize(options: PipelineOptions) -> PipelineOptions:
    """Validate once at the edge and pick the local runner when none was named."""
    streaming = is_streaming(options)
    stream_settings(options)
    lake_settings(options)
    alert_rule(options)
    shard_count(options)
    if options.view_as(VitalsOptions).batch_size < 1:
        raise ConfigError("--batch_size must be >= 1")
    alerts_topic(options)
    bigquery_settings(options)
    std = options.view_as(StandardOptions)
    std.streaming = streaming
    if std.runner is None:
        std.runner = LOCAL_STREAMING_RUNNER if streaming else LOCAL_BATCH_RUNNER
    return options


def shard_count(options: PipelineOptions) -> int:
    """``--shards``, else the runner's default: one per core locally, several per worker on Dataflow."""
    o = options.view_as(VitalsOptions)
    if o.shards is None:
        runner = str(options.view_as(StandardOptions).runner or "")
        return DATAFLOW_SHARDS if runner.startswith("Dataflow") else LOCAL_SHARDS
    try:
        return check_shards(o.shards)
    except ValueError as exc:
        raise ConfigError(f"--shards: {exc}") from exc


def engine_settings(options: PipelineOptions) -> EngineSettings:
    timing = stream_settings(options)
    return EngineSettings(
        shards=shard_count(options),
        horizon=horizon(options),
        allowed_lateness=timedelta(seconds=timing.allowed_lateness),
        time_rules=TimeRules(
            clock_skew=timedelta(seconds=timing.clock_skew),
            max_age=timedelta(seconds=timing.allowed_lateness),
        ),
        rule=alert_rule(options),
    )


def horizon(options: PipelineOptions) -> timedelta:
    return timedelta(seconds=stream_settings(options).dedup_horizon)
