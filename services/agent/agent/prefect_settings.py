"""Prefect's settings, built once per environment rather than once per run.

Building Prefect's `Settings` from the environment, the working directory's `.env`,
`prefect.toml` and `pyproject.toml` and the profiles file takes about 57 ms of CPU (its 55
nested pydantic-settings models each parse the whole environment), and so does turning it
back into variables (42 ms). Both used to sit between a run's PENDING and its RUNNING:

- the worker, as it starts each run's process, turns its settings into the variables the run
  inherits (`get_current_settings().to_environment_variables(exclude_unset=True)`, in
  Prefect's EngineCommandStarter). The worker's settings do not change while it runs, so
  `remember_environment_variables` keeps the last answer for the same settings object;
- each forked engine built its settings again (`refresh_global_settings_context`), since its
  environment is the run's, not the fork server's. The runs of one agent mostly share the
  same settings inputs, so `SettingsCache` builds them in the fork server once per distinct
  input (the run's PREFECT_ variables and HOME, the settings files its working directory and
  profiles hold) and the children of later runs take the built context.

What the cache keys on is what Prefect reads: variables whose name starts with PREFECT_
(`PREFECT__...`, the per-run identifiers such as PREFECT__FLOW_RUN_ID, are not settings),
HOME (where the default PREFECT_HOME lies), and the files, by their stat (inode, size,
modification time) or absence. A run whose inputs differ from every cached one builds its
settings as before, and the server builds that input's for the runs after it.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Read from the working directory by Prefect's settings sources.
SETTINGS_FILES = (".env", "prefect.toml", "pyproject.toml")
# Distinct environments kept; an agent's runs share one or two.
CACHE_SIZE = 8

FileStamp = tuple[int, int, int] | None  # (inode, size, mtime in ns), or None when absent


def file_stamp(path: str) -> FileStamp:
    """What tells a settings file's content changed: (inode, size, mtime_ns); None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def settings_inputs(env: Mapping[str, str], cwd: str) -> tuple[Any, ...]:
    """The part of a run's environment and working directory that Prefect's settings read."""
    variables = tuple(
        sorted(
            (name, value)
            for name, value in env.items()
            if name == "HOME"
            or (name.upper().startswith("PREFECT_") and not name.upper().startswith("PREFECT__"))
        )
    )
    files = tuple(file_stamp(os.path.join(cwd, name)) for name in SETTINGS_FILES)
    return variables, files


@dataclass
class _Entry:
    context: Any  # prefect.context.SettingsContext
    # Files found through the settings themselves: the profiles file and the home directory's.
    paths: tuple[str, ...]
    stamps: tuple[FileStamp, ...]
    home: str


class SettingsCache:
    """Prefect settings contexts built in the fork server, by settings input."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()

    def get(self, env: Mapping[str, str], cwd: str) -> Any | None:
        """The settings context a fresh engine with `env` in `cwd` would build, or None when
        none is cached for those inputs or a file it was built from has changed since."""
        entry = self._entries.get(settings_inputs(env, cwd))
        return entry.context if entry is not None and _current(entry) else None

    def build(self, env: Mapping[str, str], cwd: str) -> bool:
        """Build and keep the settings context for `env` in `cwd`, as a fresh process with
        that environment and working directory would (Prefect's `root_settings_context`);
        whether one was built. Swaps this process's environment and working directory for
        the time of the build: call it only where nothing else runs (the fork server is
        single-threaded)."""
        key = settings_inputs(env, cwd)
        kept = self._entries.get(key)
        if kept is not None and _current(kept):
            self._entries.move_to_end(key)
            return False
        from prefect.context import root_settings_context

        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        try:
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            context = root_settings_context()
            settings = context.settings
            paths = (
                str(settings.profiles_path),
                os.path.join(str(settings.home), "profiles.toml"),
            )
            entry = _Entry(
                context=context,
                paths=paths,
                stamps=tuple(file_stamp(p) for p in paths),
                home=str(settings.home),
            )
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._entries)


def _current(entry: _Entry) -> bool:
    """Whether the files an entry was built from are as they were, and its home is there."""
    stamps = tuple(file_stamp(path) for path in entry.paths)
    return stamps == entry.stamps and os.path.isdir(entry.home)


def use_settings(context: Any | None) -> bool:
    """In a forked engine whose environment is now the run's: make Prefect's settings the
    run's, from `context` when the fork server had it built, else built now as Prefect does
    after an environment change. Returns whether the cached context was used."""
    import prefect.context

    if context is None:
        prefect.context.refresh_global_settings_context()
        return False
    prefect.context.GLOBAL_SETTINGS_CONTEXT = context
    return True


def remember_environment_variables() -> None:
    """Have Prefect's `Settings.to_environment_variables` answer again from its last result
    when asked again for the same settings object with the same arguments (the worker asks
    for its own settings as it starts each run). Settings objects are not changed in place
    (Prefect copies them with `copy_with_update`); a new object is computed anew."""
    from prefect.settings.models.root import Settings

    original = Settings.to_environment_variables
    if getattr(original, "remembered", False):
        return
    last: list[tuple[Settings, tuple[bool, bool, bool], dict[str, str]]] = []

    @functools.wraps(original)
    def to_environment_variables(
        self: Settings,
        exclude_unset: bool = False,
        include_secrets: bool = True,
        include_aliases: bool = False,
    ) -> dict[str, str]:
        arguments = (exclude_unset, include_secrets, include_aliases)
        if last and last[0][0] is self and last[0][1] == arguments:
            return dict(last[0][2])
        result = original(self, exclude_unset, include_secrets, include_aliases)
        last[:] = [(self, arguments, dict(result))]
        return result

    to_environment_variables.remembered = True  # type: ignore[attr-defined]
    Settings.to_environment_variables = to_environment_variables  # type: ignore[method-assign,assignment]
