"""Docs match the code: every setting of every service is in README.md and .env.example."""

import pytest
from pydantic_settings import BaseSettings

from agent.settings import AgentSettings, AutoscalerSettings
from api.settings import ApiSettings
from devstack.settings import DevSettings
from devstack.stack import REPO
from mlflow_server.settings import MlflowServerSettings
from serving.settings import ServingSettings
from trainer.settings import TrainerSettings

SETTINGS = [
    TrainerSettings,
    AgentSettings,
    AutoscalerSettings,
    ApiSettings,
    DevSettings,
    MlflowServerSettings,
    ServingSettings,
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    readme = (REPO / "README.md").read_text()
    example = (REPO / ".env.example").read_text()
    names = [name.upper() for name in settings.model_fields]
    assert [n for n in names if f"`{n}`" not in readme] == []
    assert [n for n in names if f"{n}=" not in example] == []
