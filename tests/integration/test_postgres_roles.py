"""Least privilege in PostgreSQL (issue 23), on a real server (the embedded one of `make dev`)
after services/postgres/initdb/roles.psql, the script the Compose postgres container runs:
each service's role owns its database and reaches no other; the API's role may INSERT and
SELECT the audit log, not UPDATE, DELETE, TRUNCATE or DROP it; the API's start-up works as
that role; a server from before the roles (all the superuser's) is brought to them, its audit
chain kept."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors
from sqlalchemy.engine import make_url

from api.audit import Entry, verify
from api.db import ApiDatabase
from common.web.db import prepare_database
from devstack.postgres import EmbeddedPostgres, apply_roles, ensure_database, role_url

pytestmark = pytest.mark.integration
PASSWORDS = {
    "PREFECT_DB_PASSWORD": "prefect-secret",
    "MLFLOW_DB_PASSWORD": "mlflow-secret",
    "APP_DB_PASSWORD": "app-secret",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    postgres = EmbeddedPostgres(tmp_path_factory.mktemp("roles") / "postgres")
    postgres.start()
    yield postgres
    postgres.stop()


@pytest.fixture(scope="module")
def admin(server: EmbeddedPostgres) -> str:
    """The superuser's URL, once roles.psql ran (twice: it must be idempotent)."""
    url = server.url()
    apply_roles(url, PASSWORDS)
    apply_roles(url, PASSWORDS)
    return url


def as_role(admin: str, service: str, database: str | None = None) -> str:
    url = role_url(admin, service, PASSWORDS)
    return url if database is None else on(url, database)


def on(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def execute(url: str, statement: str, *args: object) -> list[tuple]:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, args or None)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def entry(actor: str) -> Entry:
    return Entry(actor, "admin", "POST", "/keys", None, uuid.uuid4().hex, 201)


def test_each_role_owns_its_database_and_reaches_no_other(admin: str) -> None:
    owners = dict(
        execute(
            admin,
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
            "WHERE datname IN ('prefect', 'mlflow', 'app')",
        )
    )
    assert owners == {"prefect": "prefect", "mlflow": "mlflow", "app": "app"}
    for service in ("prefect", "mlflow", "app"):
        assert execute(as_role(admin, service), "SELECT current_user") == [(service,)]
        for other in {"prefect", "mlflow", "app"} - {service}:
            with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
                psycopg2.connect(as_role(admin, service, other)).close()
    # None may make databases or roles, nor is any a superuser; app_audit cannot log in.
    flags = execute(
        admin,
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles "
        "WHERE rolname IN ('prefect', 'mlflow', 'app', 'app_audit') ORDER BY rolname",
    )
    assert flags == [
        ("app", False, False, False, True),
        ("app_audit", False, False, False, False),
        ("mlflow", False, False, False, True),
        ("prefect", False, False, False, True),
    ]
    with pytest.raises(psycopg2.OperationalError, match=r"not permitted to log in"):
        # The embedded server trusts its socket: only the role's LOGIN flag refuses here.
        psycopg2.connect(on(make_url(admin).set(username="app_audit").render_as_string(), "app"))


def test_the_app_role_may_append_and_read_the_audit_log_not_change_it(admin: str) -> None:
    app = as_role(admin, "app")
    database = ApiDatabase(app, max_connections=2)
    try:
        prepare_database(database, "the-env-key")  # the API's start-up, as `app`
        prepare_database(database, "the-env-key")  # every start runs it again
        first, second = database.append_audit(entry("a")), database.append_audit(entry("b"))
        assert second.prev_hash == first.hash and second.id > first.id
        assert verify(database.audit_rows) == (2, None)
    finally:
        database.close()
    # The table is roles.psql's, in its schema, not one the API made in `public`.
    where = execute(
        app,
        "SELECT relnamespace::regnamespace::text, pg_get_userbyid(relowner) FROM pg_class "
        "WHERE oid = to_regclass('audit_log')",
    )
    assert where == [("audit", "app_audit")]
    refused = [
        "UPDATE audit_log SET outcome = 403",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "DROP TABLE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER ALL",
        "SELECT setval('audit_log_id_seq', 1)",
        "CREATE TABLE audit.forged (id int)",
        "DROP SCHEMA audit CASCADE",
    ]
    for statement in refused:
        with pytest.raises(errors.InsufficientPrivilege):
            execute(app, statement)
    assert execute(app, "SELECT count(*) FROM audit_log") == [(2,)]
    # Its own tables it owns (keys, idempotency, people, sessions, webhooks, backfills),
    # which its start-up alters.
    owned = execute(
        on(admin, "app"),
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    assert [owner for _, owner in owned] == ["app"] * len(owned)
    assert {"api_keys", "idempotency_keys", "users", "sessions"} <= {name for name, _ in owned}


def test_the_api_makes_the_same_audit_table_where_roles_psql_did_not(admin: str) -> None:
    """Two places make the table (roles.psql; audit.py on a server of one's own): the same
    columns, types and order."""
    plain = ensure_database(admin, f"plain_{uuid.uuid4().hex[:8]}")
    database = ApiDatabase(plain, max_connections=1)
    try:
        prepare_database(database, None)
    finally:
        database.close()
    columns = (
        "SELECT column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_name = 'audit_log' ORDER BY ordinal_position"
    )
    ours, the_stacks = execute(plain, columns), execute(on(admin, "app"), columns)
    assert len(ours) == 11
    # The sequence of the id default is schema-qualified in `audit`.
    assert [c[:3] for c in ours] == [c[:3] for c in the_stacks]
    indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_log' ORDER BY 1"
    assert execute(plain, indexes) == execute(on(admin, "app"), indexes)


def test_a_server_from_before_the_roles_is_brought_to_them(tmp_path: Path) -> None:
    """All the superuser's, as every stack was: its tables, Prefect's enum, the audit log in
    `public` with a chain; roles.psql moves and re-owns it all, the chain holds, and the
    API starts as `app`."""
    postgres = EmbeddedPostgres(tmp_path / "postgres")
    postgres.start()
    try:
        admin = postgres.url()
        for name in ("prefect", "mlflow", "app"):
            ensure_database(admin, name)
        execute(
            on(admin, "prefect"),
            "CREATE TYPE state_type AS ENUM ('RUNNING'); "
            "CREATE TABLE flow_run (id serial PRIMARY KEY, state state_type); "
            "CREATE VIEW running AS SELECT * FROM flow_run",
        )
        execute(on(admin, "mlflow"), "CREATE TABLE alembic_version (version_num text)")
        old = ApiDatabase(on(admin, "app"), max_connections=1)
        try:
            prepare_database(old, "the-env-key")
            old.append_audit(entry("before"))
            last = old.append_audit(entry("roles"))
        finally:
            old.close()

        apply_roles(admin, PASSWORDS)

        owners = """
            SELECT n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('public', 'audit') AND c.relkind IN ('r', 'v', 'S') ORDER BY 1"""
        assert execute(on(admin, "prefect"), owners) == [
            ("public.flow_run", "prefect"),
            ("public.flow_run_id_seq", "prefect"),
            ("public.running", "prefect"),
        ]
        enum_owner = "SELECT pg_get_userbyid(typowner) FROM pg_type WHERE typname = 'state_type'"
        assert execute(on(admin, "prefect"), enum_owner) == [("prefect",)]
        assert execute(on(admin, "mlflow"), owners) == [("public.alembic_version", "mlflow")]
        assert execute(on(admin, "app"), owners) == [
            ("audit.audit_log", "app_audit"),
            ("audit.audit_log_id_seq", "app_audit"),
            ("public.api_keys", "app"),
            ("public.backfills", "app"),
            ("public.idempotency_keys", "app"),
            ("public.sessions", "app"),
            ("public.users", "app"),
            ("public.webhook_attempts", "app"),
            ("public.webhook_cursor", "app"),
            ("public.webhook_deliveries", "app"),
            ("public.webhooks", "app"),
        ]
        app = ApiDatabase(role_url(admin, "app", PASSWORDS), max_connections=2)
        try:
            prepare_database(app, "the-env-key")  # alters api_keys: it must own it
            after = app.append_audit(entry("after"))
            assert after.prev_hash == last.hash
            assert verify(app.audit_rows) == (3, None)
            with (
                pytest.raises(errors.InsufficientPrivilege),
                app.connection() as conn,
                conn.cursor() as cursor,
            ):
                cursor.execute("DELETE FROM audit_log")
        finally:
            app.close()
        apply_roles(admin, PASSWORDS)  # again: nothing left to do, nothing breaks
        assert execute(on(admin, "app"), "SELECT count(*) FROM audit.audit_log") == [(3,)]
    finally:
        postgres.stop()
