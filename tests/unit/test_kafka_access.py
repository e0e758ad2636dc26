"""Every Kafka client gets the same connection and credential options from the settings."""

import ssl
from pathlib import Path

import trustme

from kernel.settings import load_settings
from tally.clients import elasticsearch_options, kafka_access


def test_plaintext_is_only_the_bootstrap() -> None:
    options = kafka_access(load_settings({"TALLY_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}))
    assert options.client_options() == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_over_tls_carries_the_credentials_and_trusts_the_given_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = load_settings(
        {
            "TALLY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TALLY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TALLY_KAFKA_SASL_USERNAME": "tally",
            "TALLY_KAFKA_SASL_PASSWORD": "pw",
            "TALLY_KAFKA_SSL_CAFILE": str(ca_file),
        }
    )
    options = kafka_access(settings).client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("tally", "pw")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    # The CA given is the one the context trusts.
    assert any(c.get("serialNumber") for c in context.get_ca_certs())


def test_sasl_without_tls_has_no_ssl_context() -> None:
    settings = load_settings(
        {
            "TALLY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TALLY_KAFKA_SASL_USERNAME": "u",
            "TALLY_KAFKA_SASL_PASSWORD": "p",
        }
    )
    assert "ssl_context" not in kafka_access(settings).client_options()


def test_elasticsearch_gets_the_api_key_and_ca_only_when_set(tmp_path: Path) -> None:
    assert elasticsearch_options(load_settings({})) == {"hosts": ["http://127.0.0.1:19200"]}
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    options = elasticsearch_options(
        load_settings({"TALLY_ES_API_KEY": "aWQ6a2V5", "TALLY_ES_CA_CERTS": str(ca)})
    )
    assert options["api_key"] == "aWQ6a2V5"
    assert options["ca_certs"] == str(ca)
