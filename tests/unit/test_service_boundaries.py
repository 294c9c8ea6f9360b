"""No service package imports another, or names another's modules in a string: what services
share lives in `common` (the contract, result tables, the web edge), which imports no service.
And each image carries every package its packages import.

Read from the source (ast), not imported: a violation is named by file and line.

devstack is the local composition layer: it starts the services as processes, as
docker-compose.yaml starts their containers, so it may name a service's *program* (a package
with `__main__.py`, or a module run as `__main__`: `python -m trainer.register`), just as the
compose file's `command:` and each image's CMD do (test_images holds those to devstack's). It
may not name what a program does inside (`trainer.flows`): that is a service's own business,
or, when another service must know it, a name in common.contract.
"""

import ast
import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO / "services"
SHARED = "common"
# Its names exist to be shared: the one place a string may name another service's module.
CONTRACT = SERVICES_DIR / "common" / "common" / "contract.py"
COMPOSITION = "devstack"


def _packages() -> dict[str, Path]:
    """Each service's package (services/<folder>/<package>/__init__.py), by name."""
    return {init.parent.name: init.parent for init in sorted(SERVICES_DIR.glob("*/*/__init__.py"))}


PACKAGES = _packages()
SERVICES = set(PACKAGES) - {SHARED}
DOTTED = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)")
RUN_MODULE = re.compile(r"-m\s+([A-Za-z_][\w.]*)")


def _module_file(name: str) -> Path | None:
    """The file of module `name` of a service or common, if there is one."""
    top, *rest = name.split(".")
    if top not in PACKAGES:
        return None
    path = PACKAGES[top].joinpath(*rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _named_module(text: str) -> str | None:
    """The longest prefix of dotted `text` that is a module (`trainer.flows.train_model`
    names trainer.flows); the bare package only counts after `-m`."""
    parts = text.split(".")
    for end in range(len(parts), 1, -1):
        if _module_file(".".join(parts[:end])):
            return ".".join(parts[:end])
    return None


def _is_program(module: str) -> bool:
    path = _module_file(module)
    if path is None:
        return False
    if path.name == "__init__.py":
        return (path.parent / "__main__.py").is_file()
    return 'if __name__ == "__main__":' in path.read_text()


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for each module a string constant names: a dotted name that is a module,
    `-m <module>` inside a string, or the item after a "-m" item of a list or tuple."""
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            for flag, module in pairwise(items):
                if flag == "-m" and isinstance(module, str) and _module_file(module):
                    yield node.lineno, module
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in skip:
            continue
        for run in RUN_MODULE.findall(node.value):
            if _module_file(run):
                yield node.lineno, run
        for dotted in DOTTED.findall(node.value):
            module = _named_module(dotted)
            if module:
                yield node.lineno, module


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations(source: str, package: str, where: str, *, contract: bool = False) -> list[str]:
    """What in `source`, a file of `package`, crosses a service's boundary: `where: reason`."""
    tree = ast.parse(source)
    found = []
    for line, module in _imports(tree):
        top = module.split(".")[0]
        if top in SERVICES and top != package:
            found.append(f"{where}:{line}: imports {module}, another service's module")
    if contract:
        return found
    for line, module in sorted(set(_strings(tree))):
        top = module.split(".")[0]
        if top not in SERVICES or top == package:
            continue
        if package == COMPOSITION and _is_program(module):
            continue  # devstack starts the services' programs (see the module docstring)
        found.append(
            f"{where}:{line}: a string names {module}, another service's module "
            "(a name services share belongs in common.contract)"
        )
    return found


def _files() -> Iterator[tuple[str, Path]]:
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            yield package, path


def test_every_service_is_known() -> None:
    expected = {"agent", "api", "trainer", "serving", "mlflow_server", "devstack"}
    assert expected <= SERVICES
    assert SERVICES - expected <= {"autoscaler"}, "a new service: name it in this test"
    assert SHARED in PACKAGES


def test_no_service_reaches_into_another() -> None:
    found = [
        problem
        for package, path in _files()
        for problem in violations(
            path.read_text(),
            package,
            str(path.relative_to(REPO)),
            contract=path == CONTRACT,
        )
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("package", "source", "reason"),
    [
        ("trainer", "from agent.launch import main\n", "imports agent.launch"),
        ("serving", "import api.main\n", "imports api.main"),
        ("common", "from trainer.settings import TrainerSettings\n", "imports trainer.settings"),
        ("trainer", 'COMMAND = "python -m agent.launch"\n', "names agent.launch"),
        ("agent", 'PRELOAD = ("prefect", "trainer.flows")\n', "names trainer.flows"),
        ("api", 'ENTRY = "trainer.flows.train_model"\n', "names trainer.flows"),
        ("agent", 'ARGS = ["python", "-m", "trainer.register"]\n', "names trainer.register"),
        ("devstack", 'MODULE = "trainer.flows"\n', "names trainer.flows"),
    ],
)
def test_the_check_finds_a_crossing(package: str, source: str, reason: str) -> None:
    [problem] = violations(source, package, "x.py")
    assert problem.startswith("x.py:1: ") and reason in problem


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("serving", "from common.web.problems import Problem\n"),
        ("trainer", "from trainer.flows import load_data\n"),
        ("agent", '"""Docstrings may say agent.launch and trainer.flows."""\n'),
        ("common", 'logger = logging.getLogger("api.access")\n'),  # a logger, not a module
        ("agent", 'STATE = "agent.state"\n'),
        # devstack starts the services' programs, as docker-compose.yaml does.
        (
            "devstack",
            'COMMANDS = {"api": ["python", "-m", "api"], "t": ["-m", "trainer.register"]}',
        ),
    ],
)
def test_the_check_lets_these_be(package: str, source: str) -> None:
    assert violations(source, package, "x.py") == []


# -- Images ----------------------------------------------------------------------------------

COPY = re.compile(r"^COPY services/\w+/(\w+) /app/(\w+)$", flags=re.M)


def _imported_packages(package: str) -> set[str]:
    return {
        module.split(".")[0]
        for path in PACKAGES[package].rglob("*.py")
        for _, module in _imports(ast.parse(path.read_text()))
        if module.split(".")[0] in PACKAGES and module.split(".")[0] != package
    }


@pytest.mark.parametrize(
    "dockerfile", sorted(SERVICES_DIR.glob("*/Dockerfile")), ids=lambda p: p.parent.name
)
def test_each_image_copies_what_its_packages_import(dockerfile: Path) -> None:
    copied = {source for source, target in COPY.findall(dockerfile.read_text())}
    needed = set().union(*(_imported_packages(p) for p in copied)) if copied else set()
    missing = sorted(needed - copied)
    assert not missing, (
        f"{dockerfile.relative_to(REPO)} copies {sorted(copied)}, which import {missing}: "
        + "; ".join(f"COPY services/{PACKAGES[m].parent.name}/{m} /app/{m}" for m in missing)
    )
