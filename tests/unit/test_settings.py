"""Settings come from TALLY_* variables, typed, with clear errors."""

from pathlib import Path

import pytest

from kernel.settings import SettingsError, load_settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings({})
    assert settings.pg_dsn.startswith("postgresql://")
    assert settings.group_commit is True


def test_variables_are_converted_to_their_types() -> None:
    settings = load_settings({"TALLY_GROUP_COMMIT": "false", "TALLY_VOTE_RATE_LIMIT": "5"})
    assert settings.group_commit is False
    assert settings.vote_rate_limit == 5


def test_a_wrong_type_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="TALLY_VOTE_RATE_LIMIT"):
        load_settings({"TALLY_VOTE_RATE_LIMIT": "lots"})


def test_settings_survive_a_trip_through_the_environment() -> None:
    from kernel.settings import as_environment

    settings = load_settings({"TALLY_GROUP_COMMIT": "false", "TALLY_KAFKA_PARTITIONS": "3"})
    assert load_settings(as_environment(settings)) == settings


def test_a_secret_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "jwt"
    secret.write_text("s3cret-from-a-mounted-file\n")
    settings = load_settings({"TALLY_JWT_SECRET_FILE": str(secret)})
    assert settings.jwt_secret == "s3cret-from-a-mounted-file"


def test_a_file_and_a_value_for_one_setting_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://x@db/tally")
    with pytest.raises(SettingsError, match="TALLY_PG_DSN and TALLY_PG_DSN_FILE are both set"):
        load_settings({"TALLY_PG_DSN": "postgresql://y@db/tally", "TALLY_PG_DSN_FILE": str(secret)})


def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"TALLY_CURSOR_SECRET_FILE: cannot read .*/missing"):
        load_settings({"TALLY_CURSOR_SECRET_FILE": str(tmp_path / "missing")})


def test_sasl_without_credentials_names_the_missing_variable() -> None:
    with pytest.raises(SettingsError, match="TALLY_KAFKA_SASL_USERNAME: required when"):
        load_settings({"TALLY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(SettingsError, match="TALLY_KAFKA_SASL_PASSWORD"):
        load_settings(
            {"TALLY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TALLY_KAFKA_SASL_USERNAME": "u"}
        )


def test_an_unknown_security_protocol_or_mechanism_is_refused() -> None:
    with pytest.raises(SettingsError, match="TALLY_KAFKA_SECURITY_PROTOCOL"):
        load_settings({"TALLY_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(SettingsError, match="TALLY_KAFKA_SASL_MECHANISM"):
        load_settings({"TALLY_KAFKA_SASL_MECHANISM": "GSSAPI"})


@pytest.mark.parametrize(
    "variable", ["TALLY_KAFKA_SSL_CAFILE", "TALLY_KAFKA_SSL_CERTFILE", "TALLY_ES_CA_CERTS"]
)
def test_a_certificate_that_is_not_there_stops_the_start(variable: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=f"{variable}: no such file"):
        load_settings({variable: str(tmp_path / "missing.pem")})


def test_a_client_key_needs_its_certificate(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("key")
    with pytest.raises(SettingsError, match="TALLY_KAFKA_SSL_CERTFILE: required"):
        load_settings({"TALLY_KAFKA_SSL_KEYFILE": str(key)})


def test_the_sasl_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("from-a-secret\n")
    settings = load_settings(
        {
            "TALLY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "TALLY_KAFKA_SASL_USERNAME": "tally",
            "TALLY_KAFKA_SASL_PASSWORD_FILE": str(secret),
        }
    )
    assert settings.kafka_sasl_password == "from-a-secret"


def test_a_negative_retention_is_refused() -> None:
    with pytest.raises(SettingsError, match="TALLY_VOTES_RETENTION_DAYS"):
        load_settings({"TALLY_VOTES_RETENTION_DAYS": "-1"})
    assert load_settings({"TALLY_VOTES_RETENTION_DAYS": "90"}).votes_retention_days == 90
