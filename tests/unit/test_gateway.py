"""The front door in Compose, from `docker-compose config` (both files resolved, no Docker
daemon): the gateway is the only service with a published port, bound to GATEWAY_BIND; the
public links derive from GATEWAY_PUBLIC_URL; the TLS files and the HA upstream reach the
paths the nginx configuration reads. The configuration itself runs in nginx in
tests/e2e/test_door.py."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from devstack.stack import REPO
from testkit.compose_config import FILES, env_file, resolve

GATEWAY = REPO / "services" / "gateway"
DOOR = (GATEWAY / "door" / "door.conf").read_text()
MAIN = (GATEWAY / "nginx.conf").read_text()


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


def _upstreams(path: Path) -> dict[str, str]:
    """The `group host:port` lines of a door/upstreams file."""
    lines = [line.split() for line in path.read_text().splitlines()]
    return {line[0]: line[1] for line in lines if line and not line[0].startswith("#")}


def test_ha_points_the_door_at_the_load_balancer(tmp_path: Path) -> None:
    base = resolve(FILES[0], env_file(tmp_path))["services"]
    ha = resolve(FILES[1], env_file(tmp_path))["services"]
    replaced = "/etc/nginx/door/prefect-upstream"
    assert [v for v in base["gateway"]["volumes"] if v["target"] == replaced] == []
    [mount] = [v for v in ha["gateway"]["volumes"] if v["target"] == replaced]
    assert mount["source"] == str(GATEWAY / "door" / "prefect-upstream.ha")
    assert _upstreams(GATEWAY / "door" / "prefect-upstream") == {"door_prefect": "server:4200"}
    assert _upstreams(Path(mount["source"])) == {"door_prefect": "lb:4200"}
    assert "lb" in ha and "ports" not in ha["lb"]


def test_every_location_goes_to_a_group_door_run_renders(tmp_path: Path) -> None:
    """door-run renders each `group host:port` line as an upstream group of the addresses the
    name resolves to (a fake getent here), kept alive, and maps the group to its Host header;
    a name that does not resolve becomes a closed port (nginx still starts). Every location
    proxies to one of those groups, never to a name nginx would resolve once, at start."""
    groups = _upstreams(GATEWAY / "door" / "upstreams")
    groups |= _upstreams(GATEWAY / "door" / "prefect-upstream")
    assert groups == {
        "door_api": "api:8000", "door_mlflow": "mlflow:5000",
        "door_serving": "serving:8001", "door_prefect": "server:4200",
    }  # fmt: skip
    targets = set(re.findall(r"proxy_pass http://([^/;]+)", DOOR))
    assert targets == set(groups)
    assert "include /tmp/door-upstreams.conf;" in MAIN and "resolver" not in DOOR
    fake = tmp_path / "getent"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$2" in\n'
        "  api) printf '10.0.0.7 STREAM api\\n10.0.0.7 DGRAM\\n10.0.0.3 STREAM\\n' ;;\n"
        "  mlflow) echo '10.0.0.5 STREAM mlflow' ;;\n"
        "  *) exit 2 ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    config = {"DOOR_CONFIG_DIR": str(GATEWAY / "door"), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    config |= {"PREFECT_API_AUTH_STRING": "prefect:s3cret"}
    rendered = subprocess.run(
        ["sh", str(GATEWAY / "door-run"), "render"],
        env=os.environ | config,
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    servers = {
        group: re.findall(r"^    server (\S+);", body, re.M)
        for group, body in re.findall(r"^upstream (\S+) \{\n(.*?)^\}", rendered, re.M | re.S)
    }
    assert servers == {
        "door_api": ["10.0.0.3:8000", "10.0.0.7:8000"],
        "door_mlflow": ["10.0.0.5:5000"],
        "door_serving": ["127.0.0.1:1"],
        "door_prefect": ["127.0.0.1:1"],
    }
    assert rendered.count("keepalive 16;") == len(groups)
    host_map = rendered.split("map $proxy_host $door_upstream_host {", 1)[1]
    # volatile: the auth subrequest shares the request's variables, with another $proxy_host.
    assert host_map.split("\n")[1].strip() == "volatile;"
    assert dict(re.findall(r"^    (door_\w+) (\S+);", host_map, re.M)) == groups
    assert "proxy_set_header Host $door_upstream_host;" in DOOR
    # Prefect's basic auth, which its server requires: base64 of the auth string.
    assert 'map $host $door_prefect_authorization {\n    default "Basic cHJlZmVjdDpzM2NyZXQ=";' in (
        rendered
    )


def test_prefect_gets_its_auth_string_and_never_our_credentials(tmp_path: Path) -> None:
    """Our key or session is the door's business: Prefect's locations replace Authorization
    with Prefect's own basic auth (door-run's map); MLflow's drop it. Every Prefect client in
    Compose, and the server, get the one PREFECT_API_AUTH_STRING of .env."""
    locations = dict(re.findall(r"location \^~ (/\w+/(?:api/)?) \{(.*?)\n    \}", DOOR, re.S))
    for path in ("/prefect/api/", "/prefect/"):
        assert "proxy_set_header Authorization $door_prefect_authorization;" in locations[path]
    assert 'proxy_set_header Authorization "";' in locations["/mlflow/"]
    for files in FILES:
        services = resolve(files, env_file(tmp_path))["services"]
        servers = [n for n in ("server", "server-services") if n in services]
        for name in servers:
            environment = services[name]["environment"]
            assert environment["PREFECT_SERVER_API_AUTH_STRING"] == "prefect:secret", name
        for name in ("agent", "trainer", "autoscaler", "api", "gateway"):
            environment = services[name]["environment"]
            assert environment["PREFECT_API_AUTH_STRING"] == "prefect:secret", name


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


def test_the_door_writes_an_access_line_only_for_what_our_services_do_not_log() -> None:
    """Our API and serving log each request they answer with the same request id and the
    caller (tests/unit/test_access_line.py); the door logs its refusals, every error, and
    what it passes to Prefect and MLflow."""
    maps = (GATEWAY / "door" / "maps.conf").read_text()
    assert "access_log /dev/stdout door if=$door_access_line;" in MAIN
    body = re.search(r'map "\$status \$request_uri" \$door_access_line \{(.*?)\n\}', maps, re.S)[1]
    rules = [(p, v) for p, v in re.findall(r'"~(\S+ \S+)" (\d);', body)]
    assert re.search(r"^\s+default 1;", body, re.M)

    def logged(status: int, uri: str) -> bool:
        found = [v for p, v in rules if re.search(p, f"{status} {uri}")]
        return (found[0] if found else "1") == "1"

    for status, uri in [(200, "/api/runs/x"), (202, "/api/runs"), (302, "/login?next=/"),
                        (200, "/serving/predict"), (303, "/logout")]:  # fmt: skip
        assert not logged(status, uri), (status, uri)
    for status, uri in [(401, "/api/runs"), (403, "/api/keys"), (429, "/api/runs"),
                        (503, "/api/runs"), (404, "/api/door/check"), (422, "/api/runs"),
                        (200, "/prefect/api/flows/filter"), (200, "/mlflow/"),
                        (301, "/api"), (200, "/loginx"), (401, "/login")]:  # fmt: skip
        assert logged(status, uri), (status, uri)
