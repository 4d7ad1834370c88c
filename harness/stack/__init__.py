"""Local real services the project starts and stops itself: Tansu (Kafka protocol) and the Pub/Sub emulator.

    with LocalStack(Path("var/stack")) as stack:
        bridge = KafkaToPubSubBridge(stack.kafka, stack.pubsub)

CLI: ``python -m harness.stack up|down|status --run-dir var/stack``.
"""

from __future__ import annotations

from harness.stack.local import (
    STATE_FILE,
    LocalStack,
    ServiceStatus,
    read_state,
    running_services,
    stack_status,
    stop_stack,
)
from harness.stack.process import (
    ManagedProcess,
    MissingPrerequisite,
    StackError,
    free_port,
    pid_alive,
    port_is_free,
)
from harness.stack.services import (
    EMULATOR_JAR_ENV,
    PubSubEmulator,
    TansuBroker,
    find_emulator_jar,
    find_java,
    tansu_binary,
)
from pipelines.pubsub_clients import publisher_client, subscriber_client

__all__ = [
    "EMULATOR_JAR_ENV",
    "STATE_FILE",
    "LocalStack",
    "ManagedProcess",
    "MissingPrerequisite",
    "PubSubEmulator",
    "ServiceStatus",
    "StackError",
    "TansuBroker",
    "find_emulator_jar",
    "find_java",
    "free_port",
    "pid_alive",
    "port_is_free",
    "publisher_client",
    "read_state",
    "running_services",
    "stack_status",
    "stop_stack",
    "subscriber_client",
    "tansu_binary",
]
