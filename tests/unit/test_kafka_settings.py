"""Kafka settings: PLAINTEXT for the local broker, SASL_SSL (TLS, then SASL) for a managed Kafka, the
password from a file and never in a repr; every client (bridge, recovery, simulator) gets the same."""

from __future__ import annotations

import pytest

from pipelines.kafka_bridge import consumer_config
from simulator.sinks import kafka_producer_config
from vitals_lake.config import ConfigError, KafkaSettings

MANAGED = "bootstrap.vitals-kafka.europe-west2.managedkafka.p1.cloud.goog:9092"


def test_a_managed_kafka_over_sasl_ssl_with_the_password_from_a_file(tmp_path):
    secret = tmp_path / "kafka-password"
    secret.write_text("s3cr3t-key\n")
    env = {
        "VITALS_KAFKA_BOOTSTRAP": MANAGED,
        "VITALS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "VITALS_KAFKA_SASL_USERNAME": "bridge@p1.iam.gserviceaccount.com",
        "VITALS_KAFKA_SASL_PASSWORD_FILE": str(secret),
    }
    settings = KafkaSettings.from_env(env)
    assert "s3cr3t" not in repr(settings)
    for config in (consumer_config(settings), kafka_producer_config(settings)):
        assert config["bootstrap.servers"] == MANAGED and config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanism"] == "PLAIN" and config["sasl.password"] == "s3cr3t-key"
        assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert consumer_config(settings)["group.id"] == "vitals-bridge"


def test_plaintext_stays_the_local_default():
    config = consumer_config(KafkaSettings())
    assert config["security.protocol"] == "PLAINTEXT" and not any(k.startswith("sasl.") for k in config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VITALS_KAFKA_SECURITY_PROTOCOL": "SSL"}, "PLAINTEXT or SASL_SSL"),
        ({"VITALS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs a username and a password"),
        (
            {"VITALS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "VITALS_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "sasl_mechanism",
        ),
        ({"VITALS_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/kafka-password"}, "cannot read it"),
    ],
)
def test_a_wrong_security_setting_is_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        KafkaSettings.from_env(env)
