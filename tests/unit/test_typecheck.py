"""`make lint`'s type checker sees the services' packages where the images and tests do."""

import re
import tomllib

from devstack.stack import REPO


def test_mypy_path_is_the_services_pythonpath() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    mypy_path = [
        path.removeprefix("$MYPY_CONFIG_FILE_DIR/") for path in config["tool"]["mypy"]["mypy_path"]
    ]
    pytest_path = config["tool"]["pytest"]["ini_options"]["pythonpath"]
    [make_path] = re.findall(r"^export PYTHONPATH := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    services = [path for path in make_path.split(":") if path.startswith("services/")]
    assert mypy_path == services == [p for p in pytest_path if p.startswith("services/")]
    # Checked as a whole: a new service's package is checked once its folder is on the path.
    assert config["tool"]["mypy"]["files"] == ["services"]
    assert re.search(
        r"^lint:.*\n(\t.*\n)*\t\$\(BIN\)/mypy\n", (REPO / "Makefile").read_text(), re.M
    )
