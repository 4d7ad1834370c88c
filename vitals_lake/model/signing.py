"""Model artifacts are signed with Ed25519: the training job signs with the private key, the pipeline
verifies with the public one. A worker, or anyone who can read the pipeline's secrets, can check a
model but never make one (with the HMAC used before, the key that verified also signed).

Keys, read like every other key (:mod:`vitals_lake.keys`: hex or base64, from a variable or a file):

* ``VITALS_MODEL_SIGNING_KEY`` (``..._FILE``): the 32-byte Ed25519 private key (its seed). The training
  job and the people who publish models hold it.
* ``VITALS_MODEL_VERIFY_KEY`` (``..._FILE``): the 32-byte public key. The pipeline holds it.

Local runs without either use a public development pair, with a warning; Google's runtimes refuse it.
``python -m vitals_lake.model.signing keygen`` prints a new pair.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vitals_lake.config import ConfigError
from vitals_lake.keys import KeySource

SCHEME: Final = "ed25519:"
RETIRED_SCHEMES: Final = ("hmac-sha256:",)  # artifacts signed so before: refused, re-sign them
KEY_BYTES: Final = 32
SIGNING_KEY_ENV: Final = "VITALS_MODEL_SIGNING_KEY"
SIGNING_KEY_FILE_ENV: Final = "VITALS_MODEL_SIGNING_KEY_FILE"
VERIFY_KEY_ENV: Final = "VITALS_MODEL_VERIFY_KEY"
VERIFY_KEY_FILE_ENV: Final = "VITALS_MODEL_VERIFY_KEY_FILE"


def _private(key: bytes) -> Ed25519PrivateKey:
    if len(key) != KEY_BYTES:
        raise ConfigError(f"a model signing key is {KEY_BYTES} bytes (an Ed25519 seed), not {len(key)}")
    return Ed25519PrivateKey.from_private_bytes(key)


def public_key(private_key: bytes) -> bytes:
    """The 32-byte public key of an Ed25519 private key (its seed)."""
    return _private(private_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(message: bytes, *, private_key: bytes) -> str:
    """``ed25519:<hex of the 64-byte signature>``."""
    return SCHEME + _private(private_key).sign(message).hex()


def verify(message: bytes, signature: str, *, public_key: bytes) -> bool:
    """Whether ``signature`` (as :func:`sign` writes it) is this key's over ``message``."""
    if len(public_key) != KEY_BYTES:
        raise ConfigError(f"a model verification key is {KEY_BYTES} bytes, not {len(public_key)}")
    if not signature.startswith(SCHEME):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            bytes.fromhex(signature[len(SCHEME) :]), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# Public on purpose: they only let local runs sign and verify. Artifacts signed with them prove nothing.
DEVELOPMENT_SIGNING_KEY: Final = hashlib.sha256(
    b"vitals-lake DEVELOPMENT model signing key - not secret"
).digest()
DEVELOPMENT_VERIFY_KEY: Final = public_key(DEVELOPMENT_SIGNING_KEY)
SIGNING: Final = KeySource(
    label="model signing",
    env=SIGNING_KEY_ENV,
    file_env=SIGNING_KEY_FILE_ENV,
    development=DEVELOPMENT_SIGNING_KEY,
)
VERIFYING: Final = KeySource(
    label="model verification",
    env=VERIFY_KEY_ENV,
    file_env=VERIFY_KEY_FILE_ENV,
    development=DEVELOPMENT_VERIFY_KEY,
)


def keygen() -> dict[str, str]:
    """A new key pair, hex: what goes into the two secrets."""
    private = Ed25519PrivateKey.generate().private_bytes_raw()
    return {"signing_key": private.hex(), "verify_key": public_key(private).hex()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vitals_lake.model.signing", description="Ed25519 keys for signing model artifacts."
    )
    parser.add_argument(
        "command",
        choices=["keygen", "public"],
        help="keygen: a new pair; public: the verify key of the signing key in the environment",
    )
    parser.add_argument(
        "--out", type=Path, help="keygen: write signing.key (mode 0600) and verify.key here, not to stdout"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "public":
            print(public_key(SIGNING.load(allow_development_default=False)[0]).hex())
        elif args.out is None:
            print(json.dumps(keygen(), indent=2))
        else:
            _write_pair(args.out, keygen())
    except (ConfigError, OSError) as exc:
        parser.error(str(exc))
    return 0


def _write_pair(out: Path, pair: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    private = out / "signing.key"
    private.touch(mode=0o600, exist_ok=False)  # never readable by others, not even for a moment
    private.write_text(pair["signing_key"])
    (out / "verify.key").write_text(pair["verify_key"])
    print(f"{private} (keep it secret) and {out / 'verify.key'}")


if __name__ == "__main__":
    sys.exit(main())
