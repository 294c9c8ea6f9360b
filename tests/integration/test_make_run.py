"""`make run` (`python -m devstack.run`) against a running stack: `.env` read as python-dotenv
reads it (cron values with spaces), the key sent when there is one, progress, exit status."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.stack import REPO, LocalStack
from integration.conftest import API_KEY

pytestmark = pytest.mark.integration


def make_run(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "FLOW", "PARAMS"))}
    environ["PYTHONPATH"] = os.pathsep.join(
        str(REPO / "services" / name) for name in ("common", "devstack")
    )
    return subprocess.run(
        [sys.executable, "-m", "devstack.run"],
        cwd=cwd, env={**environ, **env}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_make_run_reads_dotenv_waits_and_reports(stack: LocalStack, tmp_path: Path) -> None:
    # What `make env` writes and .env.example suggests, cron values with spaces included.
    (tmp_path / ".env").write_text(
        f"API_KEY={API_KEY}\nAPI_PUBLIC_URL={stack.service_url}\nTRAIN_CRON=0 9 15 * *\n"
    )
    done = make_run(tmp_path, {"FLOW": "probe", "PARAMS": '{"seconds": 1}'})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started probe run" in done.stdout
    assert "Completed" in done.stdout and "Running" in done.stdout


def test_make_run_says_what_went_wrong(stack: LocalStack, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"API_PUBLIC_URL={stack.service_url}\n")
    # No key (as against `make dev` with none): the stack here wants one, and says so.
    refused = make_run(tmp_path, {"FLOW": "probe"})
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    bad = make_run(tmp_path, {"FLOW": "probe", "PARAMS": "seconds=1", "API_KEY": API_KEY})
    assert bad.returncode == 2 and "PARAMS is not JSON" in bad.stderr
    failed = make_run(tmp_path, {"FLOW": "probe", "PARAMS": '{"seconds": -1}', "API_KEY": API_KEY})
    assert failed.returncode == 1 and "HTTP 422" in failed.stderr
