"""`python -m api.admin`: people, keys and the audit log, straight on the database
(DATABASE_URL), for the first admin (person or key) when none exists and for operators on
the host.

    python -m api.admin users create --name alice --role admin [--password-stdin]
    python -m api.admin users list
    python -m api.admin users set-password alice [--password-stdin]
    python -m api.admin users disable alice

    python -m api.admin keys create --name ana --role admin --owner ana [--expires-in-days 90]
    python -m api.admin keys list
    python -m api.admin keys rotate <key id>
    python -m api.admin keys revoke <key id>
    python -m api.admin audit verify

A new key's secret is printed once, on its own line, and stored only as its SHA-256. A
password is read from a prompt without echo (twice), or with `--password-stdin` from the
first line of standard input; it has at least 12 characters and is stored only as its
argon2id hash. Each change is appended to the audit log too (actor `cli:<user>`), like one
made through the API. `verify` walks the audit chain and names the first row that does not
match (exit 1).
"""

import argparse
import datetime as dt
import getpass
import sys
import uuid
from collections.abc import Sequence

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from api import audit, people
from api.db import ApiDatabase, UserNameTakenError
from common.web.auth import Role
from common.web.db import ApiKey, KeyNameTakenError
from common.web.settings import settings_or_report


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")
    database_url: str = Field(description="PostgreSQL database of the stack's own data.")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m api.admin", description=__doc__.split("\n")[0])
    top.add_argument("--database-url", help="default: DATABASE_URL (environment or .env)")
    what = top.add_subparsers(dest="what", required=True)
    keys = what.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--owner", required=True)
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=float)
    expiry.add_argument("--expires-at", type=dt.datetime.fromisoformat, help="ISO 8601")
    keys.add_parser("list", help="every key, without secrets")
    for action in ("rotate", "revoke"):
        keys.add_parser(action, help=f"{action} a key").add_argument("key_id", type=uuid.UUID)
    users = what.add_parser("users", help="people (they log in at /login)")
    user_actions = users.add_subparsers(dest="action", required=True)
    make = user_actions.add_parser("create", help="add a person")
    make.add_argument("--name", required=True)
    make.add_argument("--role", required=True, choices=[r.value for r in Role])
    make.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    user_actions.add_parser("list", help="every person (never a password)")
    change = user_actions.add_parser("set-password", help="a new password (ends sessions)")
    change.add_argument("name")
    change.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    user_actions.add_parser("disable", help="disable and end sessions").add_argument("name")
    checks = what.add_parser("audit", help="the audit log")
    checks.add_subparsers(dest="action", required=True).add_parser(
        "verify", help="walk the hash chain; name the first row that does not match"
    )
    return top


def describe(key: ApiKey) -> str:
    state = "revoked" if key.revoked_at else "active"
    expires = key.expires_at.isoformat() if key.expires_at else "never"
    return (
        f"{key.id}  {key.name}  {key.role}  owner={key.owner or '-'}  "
        f"created={key.created_at.isoformat()}  expires={expires}  {state}"
    )


def describe_user(user: people.User) -> str:
    state = f"disabled={user.disabled_at.isoformat()}" if user.disabled_at else "active"
    return f"{user.id}  {user.name}  {user.role}  created={user.created_at.isoformat()}  {state}"


def read_password(from_stdin: bool) -> str:
    """A new password: stdin's first line, or typed twice at a prompt without echo. Raises
    WeakPasswordError for one that is too short (or long), ValueError for two that differ."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    people.check_password(password)
    return password


def run_users(args: argparse.Namespace, database: ApiDatabase) -> tuple[int, str | None]:
    """One `users` action: its exit status and the user it changed (None: nothing)."""
    if args.action == "list":
        for user in database.list_users(10_000):
            print(describe_user(user))
        return 0, None
    if args.action == "create":
        password_hash = people.hash_password(read_password(args.password_stdin))
        try:
            user = database.create_user(args.name, args.role, password_hash)
        except UserNameTakenError as error:
            print(f"api.admin: {error}", file=sys.stderr)
            return 1, None
        print(describe_user(user))
        return 0, str(user.id)
    found = database.user_by_name(args.name)
    if found is None:
        print(f"api.admin: no user named {args.name!r}", file=sys.stderr)
        return 1, None
    if args.action == "set-password":
        password_hash = people.hash_password(read_password(args.password_stdin))
        changed = database.update_user(found.id, None, password_hash)
    else:
        changed = database.disable_user(found.id)
    assert changed is not None  # it was just read; users are disabled, never deleted
    print(describe_user(changed))
    return 0, str(found.id)


def run(args: argparse.Namespace, database: ApiDatabase) -> int:
    if args.what == "users":
        try:
            status, user_id = run_users(args, database)
        except ValueError as error:  # WeakPasswordError, or two passwords that differ
            print(f"api.admin: {error}", file=sys.stderr)
            return 1
        if user_id is not None:
            _audit(
                database, f"users {args.action}", user_id, 201 if args.action == "create" else 200
            )
        return status
    if args.what == "audit":
        checked, mismatch = audit.verify(database.audit_rows)
        if mismatch is None:
            print(f"audit chain holds: {checked} rows")
            return 0
        print(f"audit chain broken at row {mismatch[0]}: {mismatch[1]} ({checked} rows before it)")
        return 1
    outcome, target = 200, None
    if args.action == "create":
        expires_at = args.expires_at
        if args.expires_in_days is not None:
            expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_in_days)
        elif expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=dt.UTC)
        try:
            key, secret = database.create_key(args.name, args.role, args.owner, expires_at)
        except KeyNameTakenError as error:
            print(f"api.admin: {error}", file=sys.stderr)
            return 1
        print(describe(key), file=sys.stderr)
        print(secret)  # alone on stdout, so that it can be captured
        outcome, target = 201, str(key.id)
    elif args.action == "list":
        for key in database.list_keys(10_000):
            print(describe(key))
        return 0
    elif args.action == "rotate":
        rotated = database.rotate_key(args.key_id)
        if rotated is None:
            print(f"api.admin: no key {args.key_id} that is not revoked", file=sys.stderr)
            return 1
        print(describe(rotated[0]), file=sys.stderr)
        print(rotated[1])
        target = str(args.key_id)
    else:
        revoked = database.revoke_key(args.key_id)
        if revoked is None:
            print(f"api.admin: no key {args.key_id}", file=sys.stderr)
            return 1
        print(describe(revoked))
        target = str(args.key_id)
    _audit(database, f"keys {args.action}", target, outcome)
    return 0


def _audit(database: ApiDatabase, route: str, target: str | None, outcome: int) -> None:
    database.append_audit(
        audit.Entry(
            actor=f"cli:{getpass.getuser()}",
            role=Role.admin.value,
            method="CLI",
            route=route,
            target=target,
            request_id=f"cli-{uuid.uuid4().hex[:16]}",
            outcome=outcome,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    url = args.database_url
    if url is None:
        settings = settings_or_report(AdminSettings, "api.admin")
        if settings is None:
            return 2
        url = settings.database_url
    database = ApiDatabase(url, max_connections=2)
    try:
        database.create_schema()
        return run(args, database)
    finally:
        database.close()


if __name__ == "__main__":
    sys.exit(main())
