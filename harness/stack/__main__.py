"""``python -m harness.stack up|down|status --run-dir var/stack``."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from harness.stack.local import LocalStack, stack_status, stop_stack
from harness.stack.process import StackError
from vitals_lake.cli import usage_error
from vitals_lake.config import LOCAL_PROJECT, ConfigError


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the start: a SIGTERM during start-up must still stop what was started.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    stack = LocalStack(
        args.run_dir, project=args.project, kafka_port=args.kafka_port, pubsub_port=args.pubsub_port
    )
    with stack:
        for key, value in stack.env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(f"# stack ready (state {stack.state_path}); Ctrl-C to stop", flush=True)
        while not stop.wait(1.0):
            if not (stack.tansu.running() and stack.emulator.running()):
                dead = [s.name for s in (stack.tansu, stack.emulator) if not s.running()]
                print(f"# service died: {', '.join(dead)}; see {stack.run_dir / 'logs'}", file=sys.stderr)
                return 1
        print("# stopping", flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = stop_stack(args.run_dir)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing running")
    return 0


def _status(args: argparse.Namespace) -> int:
    statuses = stack_status(args.run_dir)
    if args.json:
        print(json.dumps([asdict(s) for s in statuses], indent=2))
    elif not statuses:
        print(f"no stack state in {args.run_dir}")
    for s in statuses if not args.json else []:
        state = "running" if s.running else "stopped"
        print(f"{s.name:16} {state:8} pid {s.pid:<8} port {s.port} {'listening' if s.listening else ''}")
    return 0 if statuses and all(s.running for s in statuses) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("up", "start Tansu and the Pub/Sub emulator, print env exports, stay until Ctrl-C"),
        ("down", "stop the services recorded in <run-dir>/stack.json"),
        ("status", "show whether the recorded services run (exit 0 when all do)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--run-dir", type=Path, default=Path("var/stack"))
        if name == "up":
            p.add_argument("--project", default=LOCAL_PROJECT)
            p.add_argument("--kafka-port", type=int, default=None)
            p.add_argument("--pubsub-port", type=int, default=None)
        if name == "status":
            p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        return {"up": _up, "down": _down, "status": _status}[args.command](args)
    except ConfigError as exc:  # e.g. a malformed --project
        return usage_error(parser, str(exc))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
