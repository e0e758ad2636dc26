"""Settings come from TALLY_* variables, typed, with clear errors."""

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
