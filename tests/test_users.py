"""workbench/users.py and workbench/signin.py: bcrypt hashes, roles, the last admin, who acts, tokens."""

from __future__ import annotations

import bcrypt
import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import AuditLog
from db.users import User
from workbench.settings import get_settings
from workbench.signin import issue_token, token_name
from workbench.users import (
    UserError,
    acting_user,
    add_user,
    authenticate,
    hash_password,
    identity_user,
    list_users,
    remove_user,
    require,
    role_allows,
    set_role,
    verify_password,
)


def test_passwords_are_stored_as_bcrypt_hashes_and_checked():
    hashed = hash_password("correct horse")
    assert hashed.startswith("$2") and "correct horse" not in hashed
    assert bcrypt.checkpw(b"correct horse", hashed.encode())  # the standard bcrypt format
    assert verify_password("correct horse", hashed) and not verify_password("correct hors", hashed)
    assert hash_password("correct horse") != hashed  # salted
    assert not verify_password("anything", None) and not verify_password("anything", "not-a-hash")
    with pytest.raises(UserError, match="at least 8"):
        hash_password("short")
    with pytest.raises(UserError, match="72 bytes"):
        hash_password("é" * 40)


def test_roles_are_ordered_and_admin_only_actions_refuse_curators():
    assert role_allows("viewer", "look") and not role_allows("viewer", "decide")
    assert role_allows("curator", "decide") and role_allows("curator", "export")
    for admin_only in ("train", "edit_scheme", "delete_dataset", "manage_users"):
        assert not role_allows("curator", admin_only) and role_allows("admin", admin_only)
    with pytest.raises(KeyError, match="unknown action"):
        role_allows("admin", "fly")


def test_users_are_added_listed_changed_and_removed_with_audit_rows(engine):
    with session_scope(engine) as session:
        add_user(session, "boss", "password-boss", "admin", by="boss")
        add_user(session, "ana", "password-ana", "curator", by="boss")
        assert [(u["name"], u["role"]) for u in list_users(session)] == [("boss", "admin"), ("ana", "curator")]
        set_role(session, "ana", "viewer", by="boss")
        remove_user(session, "ana", by="boss")
        assert [u["name"] for u in list_users(session)] == ["boss"]
        assert [u["name"] for u in list_users(session, include_removed=True)] == ["boss", "ana"]
        rows = list(session.scalars(select(AuditLog).order_by(AuditLog.id)))
        hashes = [u.password_hash for u in session.scalars(select(User))]
    assert [(r.curator, r.action, r.entity_id) for r in rows] == [
        ("boss", "user.add", "boss"), ("boss", "user.add", "ana"), ("boss", "user.set-role", "ana"),
        ("boss", "user.remove", "ana")]
    assert (rows[2].before["role"], rows[2].after["role"]) == ("curator", "viewer")
    assert not any(h in str(r.after) for r in rows for h in hashes)  # the audit log never shows a hash


def test_clear_errors_for_unknown_users_roles_and_duplicates(engine):
    with session_scope(engine) as session:
        add_user(session, "boss", "password-boss", "admin", by=None)
        with pytest.raises(UserError, match="unknown role 'owner': use one of viewer, curator, admin"):
            add_user(session, "ana", "password-ana", "owner", by="boss")
        with pytest.raises(UserError, match="no user named 'nobody' .*users: boss"):
            set_role(session, "nobody", "viewer", by="boss")
        with pytest.raises(UserError, match="already exists"):
            add_user(session, "boss", "password-boss", "admin", by="boss")
        with pytest.raises(UserError, match="not usable"):
            add_user(session, "bad\x00name", "password-bad", "viewer", by="boss")


def test_the_last_admin_can_be_neither_removed_nor_demoted(engine):
    with session_scope(engine) as session:
        add_user(session, "boss", "password-boss", "admin", by=None)
        with pytest.raises(UserError, match="last admin"):
            set_role(session, "boss", "curator", by="boss")
        with pytest.raises(UserError, match="last admin"):
            remove_user(session, "boss", by="boss")
        add_user(session, "second", "password-second", "admin", by="boss")
        set_role(session, "boss", "curator", by="second")  # another admin is left
        with pytest.raises(UserError, match="'second' is the last admin"):
            remove_user(session, "second", by="second")


def test_sign_in_checks_the_password_and_refuses_removed_users(engine):
    with session_scope(engine) as session:
        add_user(session, "boss", "password-boss", "admin", by=None)
        add_user(session, "ana", "password-ana", "curator", by="boss")
        assert authenticate(session, "ana", "password-ana").role == "curator"
        assert authenticate(session, "ana", "password-boss") is None
        assert authenticate(session, "nobody", "password-ana") is None
        remove_user(session, "ana", by="boss")
        assert authenticate(session, "ana", "password-ana") is None
        add_user(session, "ana", "password-new", "viewer", by="boss")  # back, with a new password and role
        assert authenticate(session, "ana", "password-new").role == "viewer"


def test_an_oidc_identity_seen_first_is_a_viewer_until_an_admin_says_otherwise(engine):
    with session_scope(engine) as session:
        add_user(session, "boss", "password-boss", "admin", by=None)
        assert identity_user(session, "eve@example.com").role == "viewer"
        set_role(session, "eve@example.com", "curator", by="boss")
        assert identity_user(session, "eve@example.com").role == "curator"
        assert authenticate(session, "eve@example.com", "") is None  # no password here


def test_who_the_cli_acts_as(engine, monkeypatch):
    monkeypatch.delenv("WORKBENCH_USER", raising=False)
    with session_scope(engine) as session:
        add_user(session, "boss", "password-boss", "admin", by=None)
        add_user(session, "ana", "password-ana", "curator", by="boss")
        off = get_settings(sign_in="off")
        assert acting_user(session, off, "zoe").role == "admin"  # sign-in off: the local admin
        assert acting_user(session, get_settings(sign_in="off", user="kim")).name == "kim"
        local = get_settings(sign_in="local", user="ana")
        assert acting_user(session, local).name == "ana"
        with pytest.raises(UserError, match="'zoe' is not a user of this store"):
            acting_user(session, local, "zoe")
        with pytest.raises(UserError, match="ana is a curator: train needs the admin role"):
            require(acting_user(session, local), "train")


def test_tokens_are_signed_and_expire(tmp_path):
    settings = get_settings(data_dir=tmp_path)
    token = issue_token(settings, "ana")
    assert token_name(settings, token) == "ana"
    assert token_name(settings, token[:-3] + "abc") is None  # tampered
    assert token_name(get_settings(data_dir=tmp_path / "other"), token) is None  # another secret
    expired = issue_token(settings.model_copy(update={"session_hours": -1.0}), "ana")  # ended an hour ago
    assert token_name(settings, expired) is None
    assert (tmp_path / "auth_secret").stat().st_mode & 0o077 == 0  # readable by its owner only
