"""Docs match the code: every setting of every service is in docs/settings.md and .env.example,
and every relative link in README.md and docs/ leads to a file that exists."""

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from agent.settings import AgentSettings
from api.settings import ApiSettings
from autoscaler.settings import AutoscalerSettings
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

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# The target of an inline link or image, `[text](target)` or `[text](target "title")`.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    table = (REPO / "docs" / "settings.md").read_text()
    example = (REPO / ".env.example").read_text()
    names = [name.upper() for name in settings.model_fields]
    assert [n for n in names if f"`{n}`" not in table] == []
    assert [n for n in names if f"{n}=" not in example] == []


def relative_links(doc: Path) -> list[str]:
    """The relative link targets of a markdown file, without their `#fragment`."""
    text = FENCED.sub("", doc.read_text())
    targets = [t for t in LINK.findall(text) if not SCHEME.match(t)]
    return [t.partition("#")[0] for t in targets if not t.startswith("#")]


def test_the_docs_are_there() -> None:
    names = {doc.name for doc in DOCS}
    assert {"settings.md", "flows.md", "api.md", "operations.md"} <= names
    assert relative_links(REPO / "README.md")


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = [t for t in relative_links(doc) if not (doc.parent / t).exists()]
    assert broken == []
