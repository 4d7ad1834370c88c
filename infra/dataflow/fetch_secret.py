"""Write the latest version of a Secret Manager secret to a file, as the machine's service account.

    python fetch_secret.py SECRET OUT_FILE

SECRET is a secret id (in the project the credentials belong to, e.g. the Dataflow job's project) or a
full ``projects/P/secrets/S[/versions/V]`` name. Uses Application Default Credentials (on a Dataflow
worker: the metadata server, i.e. the worker service account) and Secret Manager's REST API through
google-auth, which the Beam SDK image already has. Exit status 1 on any failure; the value is never
printed.
"""

from __future__ import annotations

import base64
import os
import sys

SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def resource_name(secret: str, project: str | None) -> str:
    if secret.startswith("projects/"):
        return secret if "/versions/" in secret else f"{secret}/versions/latest"
    if not project:
        raise ValueError(f"secret {secret!r} has no project and the credentials name none")
    return f"projects/{project}/secrets/{secret}/versions/latest"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: fetch_secret.py SECRET OUT_FILE", file=sys.stderr)
        return 2
    secret, out = argv
    try:
        import google.auth  # noqa: PLC0415 - only inside the image
        from google.auth.transport.requests import AuthorizedSession  # noqa: PLC0415

        credentials, project = google.auth.default(scopes=[SCOPE])
        name = resource_name(secret, project)
        response = AuthorizedSession(credentials).get(
            f"https://secretmanager.googleapis.com/v1/{name}:access", timeout=30
        )
        if response.status_code != 200:
            print(f"fetch_secret: {name}: HTTP {response.status_code}", file=sys.stderr)
            return 1
        payload = base64.b64decode(response.json()["payload"]["data"])
    except Exception as exc:  # noqa: BLE001 - any failure means: do not start
        print(f"fetch_secret: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
