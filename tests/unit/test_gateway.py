"""The front door in Compose, from `docker-compose config` (both files resolved, no Docker
daemon): the gateway is the only service with a published port, bound to GATEWAY_BIND; the
public links derive from GATEWAY_PUBLIC_URL; the TLS files and the HA upstream reach the
paths the nginx configuration reads. The configuration itself runs in nginx in
tests/e2e/test_gateway.py."""

import re
from pathlib import Path

import pytest

from devstack.stack import REPO
from testkit.compose_config import FILES, resolve

GATEWAY = REPO / "services" / "gateway"
DOOR = (GATEWAY / "door" / "door.conf").read_text()
MAIN = (GATEWAY / "nginx.conf").read_text()


def env_file(tmp_path: Path, **settings: str) -> Path:
    path = tmp_path / ".env"
    base = {"POSTGRES_PASSWORD": "secret", "API_KEY": "key", "DOCKER_GID": "1", "TLS_KEY_GID": "7"}
    base |= {f"{role}_DB_PASSWORD": role.lower() for role in ("PREFECT", "MLFLOW", "APP")}
    path.write_text("".join(f"{k}={v}\n" for k, v in {**base, **settings}.items()))
    return path


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_only_the_gateway_publishes_a_port_on_loopback_by_default(
    files: tuple[str, ...], tmp_path: Path
) -> None:
    services = resolve(files, env_file(tmp_path))["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["gateway"]
    [port] = published["gateway"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8443", 8443)
    # And nothing is exposed on the host another way.
    assert not [n for n, s in services.items() if s.get("network_mode") == "host"]


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_gateway_bind_shares_the_door(files: tuple[str, ...], tmp_path: Path) -> None:
    services = resolve(files, env_file(tmp_path, GATEWAY_BIND="0.0.0.0:9443"))["services"]
    [port] = services["gateway"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("0.0.0.0", "9443", 8443)


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_public_links_derive_from_gateway_public_url(
    files: tuple[str, ...], tmp_path: Path
) -> None:
    door = "https://door.example:9443"
    services = resolve(files, env_file(tmp_path, GATEWAY_PUBLIC_URL=door))["services"]
    for name in ("server", "api", "agent", "trainer", "autoscaler"):
        assert services[name]["environment"]["PREFECT_UI_URL"] == f"{door}/prefect", name
    assert services["server"]["environment"]["PREFECT_UI_API_URL"] == f"{door}/prefect/api"
    assert services["api"]["environment"]["API_PUBLIC_URL"] == f"{door}/api"
    assert services["agent"]["environment"]["MLFLOW_UI_URL"] == f"{door}/mlflow"


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_defaults_are_the_loopback_door_and_the_prefixes_match_the_door(
    files: tuple[str, ...], tmp_path: Path
) -> None:
    services = resolve(files, env_file(tmp_path))["services"]
    replicas = [n for n in ("server", "server-services", "server-migrate") if n in services]
    for name in replicas:
        environment = services[name]["environment"]
        assert environment["PREFECT_UI_SERVE_BASE"] == "/prefect", name
        assert environment["PREFECT_UI_API_URL"] == "https://127.0.0.1:8443/prefect/api", name
    assert services["api"]["environment"]["API_ROOT_PATH"] == "/api"
    assert services["serving"]["environment"]["SERVING_ROOT_PATH"] == "/serving"
    # The door strips exactly those prefixes, and serves the Prefect UI unstripped.
    assert "rewrite ^/api(/.*)$ $1 break;" in DOOR
    assert "rewrite ^/serving(/.*)$ $1 break;" in DOOR
    assert "rewrite ^/mlflow(/.*)$ $1 break;" in DOOR
    assert "rewrite ^/prefect(/api/.*)$ $1 break;" in DOOR


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_tls_files_and_the_key_group_reach_the_gateway(
    files: tuple[str, ...], tmp_path: Path
) -> None:
    cert, key = tmp_path / "door.crt", tmp_path / "door.key"
    env = env_file(tmp_path, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
    gateway = resolve(files, env)["services"]["gateway"]
    mounts = {v["target"]: v for v in gateway["volumes"]}
    for source, target in (
        (cert, "/etc/nginx/tls/gateway.crt"),
        (key, "/etc/nginx/tls/gateway.key"),
    ):
        assert mounts[target]["source"] == str(source)
        assert mounts[target]["read_only"] is True
        # A missing file fails `up`, rather than Docker making an empty directory there.
        assert not mounts[target].get("bind", {}).get("create_host_path")
        assert f"ssl_certificate{'_key' if 'key' in target else ''} {target};" in DOOR
    assert gateway["group_add"] == ["7"]
    assert gateway["read_only"] is True and gateway["tmpfs"] == ["/tmp"]
    assert "user" not in gateway  # the image's: 101, not root


def test_default_tls_files_are_where_make_env_writes_them(tmp_path: Path) -> None:
    gateway = resolve(FILES[0], env_file(tmp_path))["services"]["gateway"]
    sources = sorted(v["source"] for v in gateway["volumes"])
    assert sources == [str(REPO / "certs" / "gateway.crt"), str(REPO / "certs" / "gateway.key")]
    assert "certs/" in (REPO / ".gitignore").read_text().splitlines()


def test_without_the_key_group_compose_says_to_run_make_env(tmp_path: Path) -> None:
    env = env_file(tmp_path)
    env.write_text(
        "".join(
            line
            for line in env.read_text().splitlines(keepends=True)
            if not line.startswith("TLS_KEY_GID=")
        )
    )
    with pytest.raises(AssertionError, match=r"TLS_KEY_GID.*make env"):
        resolve(FILES[0], env)


def test_ha_points_the_door_at_the_load_balancer(tmp_path: Path) -> None:
    base = resolve(FILES[0], env_file(tmp_path))["services"]
    ha = resolve(FILES[1], env_file(tmp_path))["services"]
    included = "/etc/nginx/door/prefect-upstream.conf"
    assert f"include {included};" in MAIN
    assert [v for v in base["gateway"]["volumes"] if v["target"] == included] == []
    [mount] = [v for v in ha["gateway"]["volumes"] if v["target"] == included]
    assert mount["source"] == str(GATEWAY / "door" / "prefect-upstream.ha.conf")
    upstream = re.compile(r"map \$host \$door_prefect \{\s+default (\S+);")
    base_upstream = (GATEWAY / "door" / "prefect-upstream.conf").read_text()
    assert upstream.search(base_upstream)[1] == "server:4200"
    assert upstream.search(Path(mount["source"]).read_text())[1] == "lb:4200"
    assert "lb" in ha and "ports" not in ha["lb"]


def test_the_door_blocks_its_own_check_and_keeps_health_open() -> None:
    assert re.search(r"location \^~ /api/door/ \{\s+auth_request off;\s+return 404;", DOOR)
    for path in (
        "/healthz", "/login", "/logout", "/prefect/api/health", "/mlflow/health",
        "/api/healthz", "/api/readyz", "/serving/healthz", "/serving/readyz",
    ):  # fmt: skip
        assert re.search(rf"location = {re.escape(path)} \{{\s+auth_request off;", DOOR), path
    # Everything else asks the authority: `auth_request` at the server level.
    assert re.search(r"^    auth_request /_door;$", DOOR, flags=re.M)


def test_the_door_keeps_only_reads_allowed_verdicts_for_half_a_second() -> None:
    """The verdict cache (docs/gateway.md): keyed by the half-second window, the method, the
    URI and both credentials; only 204s; writes and no-cache reads bypass it."""
    maps = (GATEWAY / "door" / "maps.conf").read_text()
    door = DOOR.split("location = /_door {", 1)[1].split("\n    }\n", 1)[0]
    [key] = re.findall(r'proxy_cache_key "([^"]+)";', door)
    assert key.split("|") == [
        "$door_verdict_window", "$request_method", "$request_uri",
        "$http_authorization", "$cookie_stack_session",
    ]  # fmt: skip
    assert re.findall(r"proxy_cache_valid (.+);", door) == ["204 1s"]
    assert "proxy_cache_bypass $door_verdict_fresh;" in door
    assert "proxy_no_cache $door_verdict_fresh;" in door
    assert "keys_zone=door_verdicts:" in MAIN and "proxy_cache_path /tmp/" in MAIN
    # The window: the second and which half of it, from $msec (nginx's PCRE named groups are
    # `(?<name>...)`, Python's `(?P<name>...)`).
    window = re.search(r"map \$msec \$door_verdict_window \{(.*?)\n\}", maps, re.S)[1]
    rules = [(p.replace("(?<", "(?P<"), v) for p, v in re.findall(r'"~(\S+)" "(\S+)";', window)]
    halves = {
        "1700000000.000": "1700000000.0",
        "1700000000.499": "1700000000.0",
        "1700000000.500": "1700000000.5",
        "1700000000.999": "1700000000.5",
    }
    for msec, expected in halves.items():
        [(match, value)] = [(m, v) for p, v in rules if (m := re.match(p, msec))]
        assert value.replace("${door_window_second}", match["door_window_second"]) == expected
    # Fresh (no cache) unless a GET or HEAD without no-cache.
    fresh = re.search(r"map \$request_method \$door_verdict_fresh \{(.*?)\n\}", maps, re.S)[1]
    assert re.findall(r"^\s+(\S+) (\S+);", fresh, re.M) == [
        ("default", "1"), ("GET", "$door_verdict_no_cache"), ("HEAD", "$door_verdict_no_cache"),
    ]  # fmt: skip
    no_cache = re.search(
        r"map \$http_cache_control \$door_verdict_no_cache \{(.*?)\n\}", maps, re.S
    )
    assert '"~*no-cache|no-store" 1;' in no_cache[1] and 'default "";' in no_cache[1]
