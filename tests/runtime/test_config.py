from pathlib import Path

import pytest

from livecart.runtime import config
from livecart.runtime.config import ConfigError


def test_configuration_doc_is_current() -> None:
    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == config.reference(), (
        "run: python -m livecart.runtime.config > docs/configuration.md"
    )


def test_every_setting_is_documented() -> None:
    for line in config.reference().splitlines()[8:]:
        assert not line.endswith("|  |"), f"undocumented setting: {line}"


def test_env_then_flags_take_precedence() -> None:
    s = config.load({"LIVECART_PORT": "9000", "DATABASE_URL": "postgresql://x/y"})
    assert s.port == 9000 and s.database_url == "postgresql://x/y"
    assert config.load({"LIVECART_PORT": "9000"}, port=9100).port == 9100


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LIVECART_PORT": "70000"}, "port"),
        ({"LIVECART_PORT": "eighty"}, "port"),
        ({"LIVECART_WORKERS": "2"}, "redis_url"),
        ({"DATABASE_URL": "mysql://x"}, "database_url"),
        ({"LIVECART_LOG_LEVEL": "loud"}, "log_level"),
        ({"LIVECART_WEBHOOK_URL": "https://m.example/hook"}, "webhook_secret"),
        ({"LIVECART_CHAT_BURST": "0"}, "chat_burst"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        config.load(env)
