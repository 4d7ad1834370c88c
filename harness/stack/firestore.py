"""The Firestore emulator (Google Cloud SDK component ``cloud-firestore-emulator``) as a managed service.

    with FirestoreEmulator(run_dir) as fs:
        env = fs.env()   # FIRESTORE_EMULATOR_HOST for google-cloud-firestore clients

Run straight from its jar (about 1 s to ready on this machine), in memory; stopped as a process group.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Final

from harness.stack.process import MissingPrerequisite
from harness.stack.services import (
    _SDK_DIRS,
    DEFAULT_JVM_OPTIONS,
    _gcloud_sdk_root,
    _Service,
    answers_ok,
    find_java,
)

JAR_ENV: Final = "VITALS_FIRESTORE_EMULATOR_JAR"
_JAR_GLOB: Final = "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
_MAIN_CLASS: Final = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
_INSTALL: Final = "apt-get install google-cloud-cli-firestore-emulator openjdk-17-jre-headless"


def find_firestore_jar() -> Path:
    override = os.environ.get(JAR_ENV)
    if override:
        if not Path(override).is_file():
            raise MissingPrerequisite(f"{JAR_ENV}={override!r} is not a file; unset it or: {_INSTALL}")
        return Path(override)
    roots = [*_SDK_DIRS]
    for root in roots:
        jars = sorted(glob.glob(os.path.join(root, _JAR_GLOB)))
        if jars:
            return Path(jars[-1])
    sdk_root = _gcloud_sdk_root()
    jars = sorted(glob.glob(os.path.join(sdk_root, _JAR_GLOB))) if sdk_root else []
    if jars:
        return Path(jars[-1])
    raise MissingPrerequisite(f"the Firestore emulator was not found: {_INSTALL}")


class FirestoreEmulator(_Service):
    name = "firestore-emulator"
    marker = "cloud-firestore-emulator"

    def __init__(self, run_dir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(run_dir, port=port, host=host)
        self._jar: Path | None = None
        self._java: str | None = None

    def _argv(self, port: int) -> list[str]:
        if self._jar is None:
            self._jar = find_firestore_jar()
        if self._java is None:
            self._java = find_java()
        return [
            self._java,
            *DEFAULT_JVM_OPTIONS,
            "-Duser.language=en",
            "-cp",
            str(self._jar),
            _MAIN_CLASS,
            f"--host={self.host}",
            f"--port={port}",
        ]

    def _ready(self) -> bool:
        return answers_ok(self.host_port)

    def env(self) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.host_port}
