"""Pseudonymous patient keys and the key settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging

import pyarrow as pa
import pytest

from vitals_lake.config import ConfigError
from vitals_lake.pseudonym import DEVELOPMENT_KEY, KEY_ENV, KEY_FILE_ENV, PseudonymKey, pseudonymise

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_pseudonym_is_a_truncated_hmac_stable_per_key_and_different_across_keys():
    ids = pa.array(["P000001", "P000002", "P000001", None])
    a = pseudonymise(ids, key=KEY_A).to_pylist()
    expected = hmac.new(KEY_A, b"P000001", hashlib.sha256).hexdigest()[:32]
    assert a[0] == a[2] == expected
    assert a[1] != a[0] and len(a[1]) == 32 and int(a[1], 16) >= 0
    assert a[3] is None
    assert pseudonymise(ids, key=KEY_A).to_pylist() == a  # stable (and served from the cache)
    b = pseudonymise(ids, key=KEY_B).to_pylist()
    assert b[0] != a[0] and b[1] != a[1]
    chunked = pa.chunked_array([["P000002"], ["P000001"]])
    assert pseudonymise(chunked, key=KEY_A).to_pylist() == [a[1], a[0]]


def test_a_short_key_is_refused():
    with pytest.raises(ValueError):
        pseudonymise(pa.array(["P1"]), key=b"short")
    with pytest.raises(ConfigError):
        PseudonymKey.from_text("00" * 8 + "ab", source="test")  # 9 bytes


def test_key_from_env_as_hex_or_base64_and_from_a_file(tmp_path):
    assert PseudonymKey.from_env({KEY_ENV: KEY_A.hex()}).secret == KEY_A
    assert PseudonymKey.from_env({KEY_ENV: base64.b64encode(KEY_B).decode()}).secret == KEY_B
    key_file = tmp_path / "key"
    key_file.write_text(KEY_B.hex() + "\n")
    loaded = PseudonymKey.from_env({KEY_FILE_ENV: str(key_file)})
    assert loaded.secret == KEY_B and loaded.source == f"file:{key_file}"
    assert KEY_B.hex() not in repr(loaded) and str(KEY_B) not in repr(loaded)
    with pytest.raises(ConfigError, match="neither hex nor base64"):
        PseudonymKey.from_env({KEY_ENV: "not a key!"})
    with pytest.raises(ConfigError, match="cannot read"):
        PseudonymKey.from_env({KEY_FILE_ENV: str(tmp_path / "missing")})


def test_development_default_warns_and_can_be_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="vitals_lake.pseudonym"):
        key = PseudonymKey.from_env({})
    assert key.secret == DEVELOPMENT_KEY and key.is_development
    assert "development pseudonym key" in caplog.text
    assert not PseudonymKey.from_env({KEY_ENV: KEY_A.hex()}).is_development
    with pytest.raises(ConfigError, match=KEY_ENV):
        PseudonymKey.from_env({}, allow_development_default=False)


@pytest.mark.parametrize("runtime", [{"CLOUD_RUN_JOB": "vitals-admissions"}, {"K_SERVICE": "alert-notifier"}])
def test_a_cloud_run_job_service_or_function_never_falls_back_to_the_public_key(runtime):
    with pytest.raises(ConfigError, match="development key is for local runs only"):
        PseudonymKey.from_env(runtime)  # even though the development default is allowed by default
    assert PseudonymKey.from_env({**runtime, KEY_ENV: KEY_A.hex()}).secret == KEY_A
