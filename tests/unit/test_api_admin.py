"""`python -m api.admin` (api.admin): keys made, listed, rotated and revoked on the database,
each change in the audit log; `audit verify` names a broken chain."""

import dataclasses
import io
import uuid

import pytest

from api import admin, people
from common.web.db import hash_key
from testkit.apps import FakeDatabase


def run(database: FakeDatabase, *argv: str) -> int:
    return admin.run(admin.parser().parse_args(argv), database)  # type: ignore[arg-type]


def test_a_first_admin_key_is_printed_once_and_audited(
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = FakeDatabase({})
    assert (
        run(database, "keys", "create", "--name", "root", "--role", "admin", "--owner", "me") == 0
    )
    out, err = capsys.readouterr()
    secret = out.strip()
    (key,) = database.key_hashes().values()
    assert key.name == "root" and key.role == "admin" and "root" in err
    assert database.key_hashes() == {hash_key(secret): key}
    assert run(database, "keys", "list") == 0
    assert "root  admin  owner=me" in capsys.readouterr().out
    assert run(database, "keys", "rotate", str(key.id)) == 0
    assert capsys.readouterr().out.strip() != secret
    assert run(database, "keys", "revoke", str(key.id)) == 0
    assert run(database, "keys", "rotate", str(key.id)) == 1
    assert run(database, "keys", "revoke", str(uuid.uuid4())) == 1
    routes = [(r.method, r.route, r.target) for r in database.audit]
    assert routes == [
        ("CLI", "keys create", str(key.id)),
        ("CLI", "keys rotate", str(key.id)),
        ("CLI", "keys revoke", str(key.id)),
    ]
    assert all(r.actor.startswith("cli:") for r in database.audit)


def test_a_taken_name_and_an_expiry(capsys: pytest.CaptureFixture[str]) -> None:
    database = FakeDatabase({})
    argv = ["keys", "create", "--name", "a", "--role", "viewer", "--owner", "o"]
    assert run(database, *argv, "--expires-in-days", "1") == 0
    assert run(database, *argv) == 1
    (key,) = database.key_hashes().values()
    assert key.expires_at is not None


def test_verify_names_the_first_row_that_does_not_match(
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = FakeDatabase({})
    for name in ("a", "b", "c"):
        run(database, "keys", "create", "--name", name, "--role", "viewer", "--owner", "o")
    capsys.readouterr()
    assert run(database, "audit", "verify") == 0
    assert "holds: 3 rows" in capsys.readouterr().out
    database.audit[1] = dataclasses.replace(database.audit[1], actor="someone-else")
    assert run(database, "audit", "verify") == 1
    assert "broken at row 2" in capsys.readouterr().out


def test_without_a_database_url_it_says_which_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    assert admin.main(["keys", "list"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err


def test_the_first_admin_person_from_stdin_and_a_prompt(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    database = FakeDatabase({})
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    argv = ["users", "create", "--name", "alice", "--role", "admin", "--password-stdin"]
    assert run(database, *argv) == 0
    (user,) = database.users.values()
    assert (user.name, user.role) == ("alice", "admin")
    stored = database.password_hashes[user.id]
    assert stored.startswith("$argon2id$") and "a long enough password" not in stored
    assert people.verify_password(stored, "a long enough password")
    assert "a long enough password" not in capsys.readouterr().out

    typed = iter(["too short", "too short"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert run(database, "users", "create", "--name", "bo", "--role", "viewer") == 1
    assert "at least 12 characters" in capsys.readouterr().err
    differ = iter(["first long password", "second long password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(differ))
    assert run(database, "users", "set-password", "alice") == 1
    assert "differ" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.StringIO("a new long password\n"))
    assert run(database, "users", "set-password", "alice", "--password-stdin") == 0
    assert people.verify_password(database.password_hashes[user.id], "a new long password")
    assert run(database, "users", "list") == 0
    assert "alice  admin" in capsys.readouterr().out
    assert run(database, "users", "disable", "alice") == 0
    assert database.users[user.id].disabled_at is not None
    assert run(database, "users", "disable", "nobody") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    assert run(database, *argv) == 1  # the name stays taken
    assert [(r.route, r.target) for r in database.audit] == [
        ("users create", str(user.id)),
        ("users set-password", str(user.id)),
        ("users disable", str(user.id)),
    ]
