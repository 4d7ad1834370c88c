"""Command line: ``python -m simulator --help``."""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Final

import orjson

from simulator.engine import MANIFEST_FILE, SimulationConfig, run_simulation
from simulator.faults import FaultRates
from simulator.progress import Progress
from simulator.sinks import JsonlSink, KafkaSink, NullSink, PubSubSink, Sink, SinkError, create_kafka_topic
from vitals_lake.cli import usage_error
from vitals_lake.config import ConfigError, KafkaSettings, PubSubSettings

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"


def parse_duration(text: str) -> float:
    """Seconds in ``5s``, ``2m``, ``1h``, ``1h30m``, ``250ms`` or a plain number of seconds."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
        return seconds
    if not re.fullmatch(f"(?:{_PART})+", text):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 5s, 2m, 1h)")
    return sum(float(n) * _UNITS[u] for n, u in re.findall(_PART, text))


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate must be within [0, 1], got {text}")
    return value


def _start(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start needs a UTC offset, e.g. {text}+00:00")
    return t


def build_parser() -> argparse.ArgumentParser:
    kafka_env = KafkaSettings.from_env()
    pubsub_env = PubSubSettings.from_env()
    defaults = FaultRates()
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Simulate bedside monitors streaming patient vitals, with clinical episodes "
        "(ground-truth labels) and realistic imperfections (duplicates, late and out-of-order "
        "readings, clock skew, dropouts, malformed records).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--patients", type=int, default=100, help="cohort size")
    run.add_argument(
        "--interval",
        type=parse_duration,
        default=5.0,
        metavar="DURATION",
        help="one reading per patient per interval (5s, 500ms, ...), in seconds",
    )
    run.add_argument(
        "--duration",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="simulated time to cover (10m, 1h, ...), in seconds",
    )
    run.add_argument("--seed", type=int, default=42)
    run.add_argument(
        "--fast", action="store_true", help="simulated clock, as fast as possible, instead of real time"
    )
    run.add_argument(
        "--start",
        type=_start,
        default=None,
        metavar="ISO",
        help="fast mode: first reading time; omitted: now minus the duration",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=Path("var/sim"),
        help=f"directory for labels.jsonl, {MANIFEST_FILE}, landing/ and reference/",
    )
    run.add_argument(
        "--admissions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the daily admission CSV and the diagnosis mapping",
    )
    run.add_argument("--quiet", action="store_true", help="no progress line on stderr")

    sink = p.add_argument_group("sink")
    sink.add_argument("--sink", choices=("jsonl", "kafka", "pubsub", "null"), default="jsonl")
    sink.add_argument("--jsonl", type=Path, default=None, help="JSONL path; omitted: OUT/readings.jsonl")
    sink.add_argument("--bootstrap", default=kafka_env.bootstrap_servers, help="Kafka bootstrap servers")
    sink.add_argument("--topic", default=kafka_env.topic, help="Kafka topic")
    sink.add_argument("--project", default=pubsub_env.project, help="GCP project (Pub/Sub)")
    sink.add_argument("--pubsub-topic", default=pubsub_env.topic, help="Pub/Sub topic")
    sink.add_argument(
        "--emulator-host",
        default=pubsub_env.emulator_host,
        help="Pub/Sub emulator host:port; omitted: $PUBSUB_EMULATOR_HOST",
    )
    sink.add_argument(
        "--create-topic",
        action="store_true",
        help="create the Kafka or Pub/Sub topic if it does not exist (local brokers)",
    )
    sink.add_argument("--partitions", type=int, default=3, help="partitions when creating a Kafka topic")

    imperfect = p.add_argument_group("episodes and imperfections (rates in [0, 1])")
    imperfect.add_argument(
        "--episode-rate", type=_rate, default=0.2, help="share of patients with an episode"
    )
    imperfect.add_argument("--duplicate-rate", type=_rate, default=defaults.duplicate)
    imperfect.add_argument("--malformed-rate", type=_rate, default=defaults.malformed)
    imperfect.add_argument("--late-rate", type=_rate, default=defaults.late)
    imperfect.add_argument("--out-of-order-rate", type=_rate, default=defaults.out_of_order)
    imperfect.add_argument("--skewed-device-rate", type=_rate, default=defaults.skewed_device)
    imperfect.add_argument(
        "--local-offset-rate",
        type=_rate,
        default=defaults.local_offset_device,
        help="share of devices writing timestamps in a local offset",
    )
    imperfect.add_argument(
        "--dropout-rate",
        type=_rate,
        default=defaults.dropout,
        help="chance per device and interval that a reporting gap starts",
    )
    run.add_argument(
        "--wait-for-late",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="real time: after the last interval, wait until late readings are due",
    )
    imperfect.add_argument(
        "--late-seconds",
        type=parse_duration,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=defaults.late_seconds,
        help="how late late readings are sent",
    )
    return p


def _make_sink(args: argparse.Namespace) -> Sink:
    if args.sink == "jsonl":
        return JsonlSink(args.jsonl or args.out / "readings.jsonl")
    if args.sink == "kafka":
        settings = replace(KafkaSettings.from_env(), bootstrap_servers=args.bootstrap, topic=args.topic)
        if args.create_topic:
            create_kafka_topic(settings, partitions=args.partitions)
        return KafkaSink(settings)
    if args.sink == "pubsub":
        pubsub = PubSubSettings(
            project=args.project, topic=args.pubsub_topic, emulator_host=args.emulator_host
        )
        return PubSubSink(pubsub, create_topic=args.create_topic)
    return NullSink()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ConfigError as exc:  # a malformed VITALS_* / PUBSUB_EMULATOR_HOST variable (the defaults)
        return usage_error(argparse.ArgumentParser(prog="python -m simulator"), f"environment: {exc}")
    args = parser.parse_args(argv)
    try:
        config = SimulationConfig(
            patients=args.patients,
            interval_seconds=args.interval,
            duration_seconds=args.duration,
            seed=args.seed,
            fast=args.fast,
            start=args.start,
            episode_rate=args.episode_rate,
            faults=FaultRates(
                duplicate=args.duplicate_rate,
                malformed=args.malformed_rate,
                late=args.late_rate,
                out_of_order=args.out_of_order_rate,
                skewed_device=args.skewed_device_rate,
                local_offset_device=args.local_offset_rate,
                dropout=args.dropout_rate,
                late_seconds=(args.late_seconds[0], args.late_seconds[1]),
            ),
            out_dir=args.out,
            admissions=args.admissions,
            wait_for_late=args.wait_for_late,
        )
        sink = _make_sink(args)
    except (ValueError, ConfigError) as exc:
        parser.error(str(exc))

    # Ctrl-C / SIGTERM end the run after the current interval, so the manifest stays exact.
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        manifest = run_simulation(
            config, sink, sink_name=args.sink, progress=None if args.quiet else Progress(), stop=stop
        )
        sink.close()
    except SinkError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    sys.stdout.buffer.write(orjson.dumps(manifest.to_dict()) + b"\n")
    sys.stdout.flush()
    return 0
