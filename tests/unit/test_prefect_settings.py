"""agent.prefect_settings: the settings a forked engine takes from the fork server's cache are
the ones Prefect itself builds for the run's environment and working directory, and the
worker's remembered variables are its settings' own."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.prefect_settings import (
    SettingsCache,
    remember_environment_variables,
    settings_inputs,
    use_settings,
)


def base_env(root: Path) -> dict[str, str]:
    """A run's environment, its homes under root."""
    return {
        "HOME": str(root / "user"),
        "PATH": "/usr/bin",
        "PREFECT_API_URL": "http://127.0.0.1:1/api",
        "PREFECT_HOME": str(root / "prefect"),
    }


def fresh(env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """What Prefect builds in a process with `env` in `cwd`."""
    from prefect.context import root_settings_context

    with monkeypatch.context() as m:
        for name in list(os.environ):
            m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        m.chdir(cwd)
        return root_settings_context().settings.model_dump()


def test_the_inputs_are_prefect_s_variables_home_and_the_settings_files(tmp_path: Path) -> None:
    env = {
        **base_env(tmp_path),
        "PREFECT__FLOW_RUN_ID": "a",  # per run, not a setting
        "prefect_logging_level": "DEBUG",  # Prefect reads its variables in any case
        "SYNTHETIC_ROWS": "10",
    }
    variables, files = settings_inputs(env, str(tmp_path))
    assert dict(variables) == {
        "HOME": str(tmp_path / "user"),
        "PREFECT_API_URL": "http://127.0.0.1:1/api",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "prefect_logging_level": "DEBUG",
    }
    assert files == (None, None, None)
    assert settings_inputs({**env, "PREFECT__FLOW_RUN_ID": "b"}, str(tmp_path)) == (
        variables,
        files,
    )
    (tmp_path / "prefect.toml").write_text("[client]\nmax_retries = 2\n")
    assert settings_inputs(env, str(tmp_path))[1][1] is not None


def test_a_run_whose_inputs_were_built_gets_them_and_others_get_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = SettingsCache()
    env = {**base_env(tmp_path), "PREFECT_CLIENT_MAX_RETRIES": "7"}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert cache.get(env, str(run_dir)) is None
    before = dict(os.environ), os.getcwd()
    assert cache.build(env, str(run_dir))
    assert (dict(os.environ), os.getcwd()) == before  # the build's swap is undone
    assert not cache.build(env, str(run_dir))  # built once
    context = cache.get({**env, "PREFECT__FLOW_RUN_ID": "x"}, str(run_dir))
    assert context is not None
    assert context.settings.client.max_retries == 7
    assert context.settings.model_dump() == fresh(env, run_dir, monkeypatch)
    # Another run directory without settings files shares them (each run gets a new one).
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    assert cache.get(env, str(other_dir)) is context
    assert cache.get({**env, "PREFECT_CLIENT_MAX_RETRIES": "3"}, str(run_dir)) is None
    # A settings file in the run's directory, or a changed profiles file: built anew.
    (other_dir / ".env").write_text("PREFECT_CLIENT_MAX_RETRIES=2\n")
    assert cache.get(env, str(other_dir)) is None
    profiles = Path(context.settings.profiles_path)
    profiles.parent.mkdir(parents=True, exist_ok=True)
    profiles.write_text('active = "local"\n[profiles.local]\nPREFECT_CLIENT_MAX_RETRIES = 1\n')
    assert cache.get(env, str(run_dir)) is None
    # Built again for the runs after it, from the changed file, as Prefect would.
    assert cache.build(env, str(run_dir))
    rebuilt = cache.get(env, str(run_dir))
    assert rebuilt is not None and rebuilt is not context
    assert rebuilt.settings.model_dump() == fresh(env, run_dir, monkeypatch)


def test_the_cache_keeps_the_latest_environments_only(tmp_path: Path) -> None:
    cache = SettingsCache(size=2)
    envs = [{**base_env(tmp_path), "PREFECT_CLIENT_MAX_RETRIES": str(n)} for n in (1, 2, 3)]
    for env in envs:
        cache.build(env, str(tmp_path))
    assert len(cache) == 2
    assert cache.get(envs[0], str(tmp_path)) is None
    assert cache.get(envs[2], str(tmp_path)).settings.client.max_retries == 3


SETTINGS = {
    "PREFECT_CLIENT_MAX_RETRIES": st.integers(0, 20).map(str),
    "PREFECT_API_REQUEST_TIMEOUT": st.floats(1, 300, allow_nan=False).map(str),
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": st.sampled_from(["true", "false", "True", "0"]),
    "PREFECT_TASKS_DEFAULT_RETRIES": st.integers(0, 5).map(str),
    "PREFECT_API_URL": st.sampled_from(["http://127.0.0.1:4200/api", "https://server:4200/api"]),
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    variables=st.dictionaries(st.sampled_from(sorted(SETTINGS)), st.just("")).flatmap(
        lambda chosen: st.fixed_dictionaries({name: SETTINGS[name] for name in chosen})
    ),
    dotenv=st.dictionaries(st.sampled_from(sorted(SETTINGS)), st.just(""), max_size=2).flatmap(
        lambda chosen: st.fixed_dictionaries({name: SETTINGS[name] for name in chosen})
    ),
)
def test_cached_settings_are_prefect_s_own_for_any_inputs(
    variables: dict[str, str],
    dotenv: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = tmp_path_factory.mktemp("run")
    if dotenv:
        (run_dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
    env = {**base_env(run_dir), **variables}
    cache = SettingsCache()
    cache.build(env, str(run_dir))
    context = cache.get(env, str(run_dir))
    assert context is not None
    assert context.settings.model_dump() == fresh(env, run_dir, monkeypatch)


def test_an_engine_takes_the_cached_context_or_builds_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import prefect.context

    cache = SettingsCache()
    env = {**base_env(tmp_path), "PREFECT_CLIENT_MAX_RETRIES": "9"}
    cache.build(env, str(tmp_path))
    monkeypatch.setattr(
        prefect.context, "GLOBAL_SETTINGS_CONTEXT", prefect.context.GLOBAL_SETTINGS_CONTEXT
    )
    assert use_settings(cache.get(env, str(tmp_path)))
    assert prefect.context.GLOBAL_SETTINGS_CONTEXT.settings.client.max_retries == 9
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "4")
    assert not use_settings(None)  # as Prefect does after an environment change
    assert prefect.context.GLOBAL_SETTINGS_CONTEXT.settings.client.max_retries == 4


def test_the_worker_s_variables_are_its_settings_and_follow_a_new_settings_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES
    from prefect.settings.models.root import Settings

    # Prefect's own method again after the test.
    monkeypatch.setattr(Settings, "to_environment_variables", Settings.to_environment_variables)
    settings_a = Settings()
    expected = settings_a.to_environment_variables(exclude_unset=True)
    remember_environment_variables()
    remember_environment_variables()  # installed once
    assert getattr(Settings.to_environment_variables, "remembered", False)
    first = settings_a.to_environment_variables(exclude_unset=True)
    assert first == expected
    first["PREFECT_API_URL"] = "changed by the caller"
    assert settings_a.to_environment_variables(exclude_unset=True) == expected  # a copy
    assert settings_a.to_environment_variables() == Settings.to_environment_variables.__wrapped__(
        settings_a
    )  # other arguments: computed for them
    settings_b = settings_a.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 11})
    assert (
        settings_b.to_environment_variables(exclude_unset=True)["PREFECT_CLIENT_MAX_RETRIES"]
        == "11"
    )
