"""The API's settings (api.settings): no start without an API key or insecure dev mode."""

import pytest
from pydantic import ValidationError

from api.settings import ApiSettings


def test_no_key_means_no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEY", "API_INSECURE_DEV_MODE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="no API key configured: set API_KEY"):
        ApiSettings(database_url="postgresql://x/y", _env_file=None)
    assert ApiSettings(database_url="postgresql://x/y", api_insecure_dev_mode=True, _env_file=None)
    assert ApiSettings(database_url="postgresql://x/y", api_key="k" * 32, _env_file=None).api_key
