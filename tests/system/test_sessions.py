"""Sessions: a refresh-token family ends a fixed time after its login however often it rotates;
a refresh retried within the grace gets the same new token, one after it revokes the family; a
password change (by the user, or ADMIN_PASSWORD at a restart) ends the user's other sessions;
the cookie is Secure when configured. One cluster (no agents) serves the module; tests that need
other settings start an API instance of their own on the same database."""

import concurrent.futures
import re
import secrets
import time

import pytest
import requests

from api_helpers import error_of, module_cluster
from dba_client import DbaClient, pb
from dbagent_helpers import SC


@pytest.fixture(scope="module")
def cl(calc_session):
    c = module_cluster(calc_session, "sessions", agents=0)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def dba(cl):
    c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
    yield c
    c.close()


def cookie_of(r):
    """The refresh-token cookie a reply sets: (value, Max-Age, the whole header)."""
    header = r.headers["Set-Cookie"]
    m = re.match(r"refresh-token=([0-9a-f]*); Max-Age=(\d+);", header)
    assert m, header
    return m.group(1), int(m.group(2)), header


def register(url, prefix="s", password="password1"):
    login = f"{prefix}{secrets.token_hex(4)}"
    r = requests.post(url + "/api/v1/register", json={"login": login, "password": password})
    assert r.status_code == 200, r.text
    return login


def log_in(url, login, password="password1"):
    """(access token, refresh token, Max-Age) of a new session."""
    r = requests.post(url + "/api/v1/login", json={"login": login, "password": password})
    assert r.status_code == 200, r.text
    token, max_age, _ = cookie_of(r)
    return r.json()["accessToken"], token, max_age


def refresh(url, token):
    return requests.post(url + "/api/v1/refresh", headers={"Cookie": f"refresh-token={token}"})


def authorized(url, access):
    return requests.get(url + "/expression", headers={"Authorization": f"Bearer {access}"}).status_code == 200


def test_a_session_ends_at_its_max_age_however_often_it_rotates(cl):
    api = cl.start_api("api-max-age", REFRESH_MAX_AGE_S="3")
    login = register(api.url)
    t0 = time.monotonic()
    _, token, max_age = log_in(api.url, login)
    assert max_age == 3  # the family's life, not REFRESH_TOKEN_TTL_S (30 days)
    ages, ended = [], []

    def rotate_until_refused():
        nonlocal token
        r = refresh(api.url, token)
        if r.status_code == 401:
            ended.append(time.monotonic() - t0)
            return True
        assert r.status_code == 200, r.text
        token, age, _ = cookie_of(r)
        ages.append(age)
        return False

    cl.wait_for(rotate_until_refused, 20, "the session to end", interval=0.2)
    # Every rotation kept the end where the login put it: the cookie's life only shrinks.
    assert len(ages) >= 3 and ages == sorted(ages, reverse=True) and ages[0] <= 3, ages
    assert ended[0] >= 2.9, ended  # not before the max age
    assert ended[0] < 10, ended
    # The same login starts a new session.
    _, fresh, _ = log_in(api.url, login)
    assert refresh(api.url, fresh).status_code == 200


def test_a_refresh_retried_within_the_grace_gets_the_same_token(cl):
    url = cl.apis[0].url  # REFRESH_REUSE_GRACE_MS: the default, 10 s
    _, first, _ = log_in(url, register(url))
    r = refresh(url, first)
    assert r.status_code == 200
    second, _, _ = cookie_of(r)
    assert second != first
    # The reply was lost: the client sends the same token again and gets the same new one.
    r = refresh(url, first)
    assert r.status_code == 200, r.text
    assert cookie_of(r)[0] == second
    assert authorized(url, r.json()["accessToken"])
    # The family is intact: the new token rotates as usual.
    r = refresh(url, second)
    assert r.status_code == 200, r.text
    third, _, _ = cookie_of(r)
    assert third not in (first, second)
    # The first token again, now that its successor was used: a copy; the whole family goes.
    error_of(refresh(url, first), 401)
    error_of(refresh(url, third), 401)


def test_refreshes_racing_with_one_token_all_get_its_successor(cl):
    url = cl.apis[0].url
    _, first, _ = log_in(url, register(url))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: refresh(url, first), range(6)))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    tokens = {cookie_of(r)[0] for r in replies}
    assert len(tokens) == 1 and first not in tokens
    assert refresh(url, tokens.pop()).status_code == 200  # the family is intact


def test_a_reuse_after_the_grace_revokes_the_family(cl):
    api = cl.start_api("api-short-grace", REFRESH_REUSE_GRACE_MS="300")
    _, first, _ = log_in(api.url, register(api.url))
    t0 = time.monotonic()
    r = refresh(api.url, first)
    assert r.status_code == 200
    second, _, _ = cookie_of(r)
    refused = []

    def first_refused():
        r = refresh(api.url, first)
        if r.status_code == 200:  # still within the grace: the same successor
            assert cookie_of(r)[0] == second
            return False
        error_of(r, 401)
        refused.append(time.monotonic() - t0)
        return True

    cl.wait_for(first_refused, 10, "the grace to pass", interval=0.05)
    assert refused[0] >= 0.3, refused
    error_of(refresh(api.url, second), 401)
    error_of(refresh(api.url, first), 401)


def test_a_password_change_ends_the_other_sessions_and_keeps_the_callers(cl):
    url = cl.apis[0].url
    login = register(url)
    access_a, refresh_a, _ = log_in(url, login)
    access_b, refresh_b, _ = log_in(url, login)
    change = {"old_password": "password1", "new_password": "password2"}
    r = requests.post(url + "/api/v1/password", json=change, headers={"Authorization": f"Bearer {access_a}"})
    assert r.status_code == 200, r.text
    new_refresh_a, _, _ = cookie_of(r)
    assert authorized(url, r.json()["accessToken"])
    # Every refresh token the user had is revoked; the caller's new one works.
    error_of(refresh(url, refresh_b), 401)
    error_of(refresh(url, refresh_a), 401)
    assert refresh(url, new_refresh_a).status_code == 200
    # Only the new password logs in.
    error_of(requests.post(url + "/api/v1/login", json={"login": login, "password": "password1"}), 401)
    log_in(url, login, "password2")
    # Access tokens already issued live out their ACCESS_TOKEN_TTL_S (documented).
    assert authorized(url, access_b)


def test_a_password_change_checks_its_input(cl):
    url = cl.apis[0].url
    login = register(url)
    access, token, _ = log_in(url, login)
    auth = {"Authorization": f"Bearer {access}"}

    def change(body, headers=auth):
        return requests.post(url + "/api/v1/password", json=body, headers=headers)

    error_of(change({"old_password": "password1", "new_password": "x"}, headers={}), 401)
    assert "new_password" in error_of(change({"old_password": "password1"}), 400)["error"]
    assert "old_password" in error_of(change({"new_password": "password2"}), 400)["error"]
    assert "new_password" in error_of(change({"old_password": "password1", "new_password": "short"}), 400)["error"]
    r = requests.post(url + "/api/v1/password", data="{", headers=dict(auth, **{"Content-Type": "application/json"}))
    error_of(r, 400)
    # A wrong old password is a 403, and counts as a failed login: the sixth try in a minute is
    # refused even with the right password.
    for _ in range(5):
        assert "old_password" in error_of(change({"old_password": "wrong-pass", "new_password": "password2"}), 403)["error"]
    error_of(change({"old_password": "password1", "new_password": "password2"}), 429)
    error_of(requests.post(url + "/api/v1/login", json={"login": login, "password": "password1"}), 429)
    assert refresh(url, token).status_code == 200  # nothing was revoked


def stop_api(cl, api):
    assert cl.stop(api) == 0
    api.expect_clean_exit = False  # stopped and checked here: the cluster's checks skip it


def test_a_changed_admin_password_at_start_revokes_the_admins_sessions(cl):
    api = cl.start_api("api-admin", ADMIN_LOGIN="boss", ADMIN_PASSWORD="first-pass-1")
    _, token, _ = log_in(api.url, "boss", "first-pass-1")
    stop_api(cl, api)
    # A start with the same password keeps the sessions.
    api = cl.start_api("api-admin-again", ADMIN_LOGIN="boss", ADMIN_PASSWORD="first-pass-1")
    r = refresh(api.url, token)
    assert r.status_code == 200, r.text
    token, _, _ = cookie_of(r)
    assert "revoked" not in api.log()
    stop_api(cl, api)
    # A start with another password revokes them.
    api = cl.start_api("api-admin-changed", ADMIN_LOGIN="boss", ADMIN_PASSWORD="second-pass-2")
    assert "ADMIN_PASSWORD changed, its sessions are revoked" in api.log()
    error_of(refresh(api.url, token), 401)
    error_of(requests.post(api.url + "/api/v1/login", json={"login": "boss", "password": "first-pass-1"}), 401)
    access, _, _ = log_in(api.url, "boss", "second-pass-2")
    r = requests.post(api.url + "/duration", json={"+": 0}, headers={"Authorization": f"Bearer {access}"})
    assert r.status_code == 200, r.text  # still the admin
    stop_api(cl, api)


def test_the_cookie_is_secure_when_configured(cl):
    plain = cl.apis[0].url
    login = register(plain)
    r = requests.post(plain + "/api/v1/login", json={"login": login, "password": "password1"})
    assert "Secure" not in cookie_of(r)[2]
    api = cl.start_api("api-secure", COOKIE_SECURE="1")
    r = requests.post(api.url + "/api/v1/login", json={"login": login, "password": "password1"})
    token, _, header = cookie_of(r)
    assert "; Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header
    r = refresh(api.url, token)
    token, _, header = cookie_of(r)
    assert "; Secure" in header
    r = requests.post(api.url + "/api/v1/logout", headers={"Cookie": f"refresh-token={token}"})
    assert r.status_code == 200 and "Max-Age=0" in r.headers["Set-Cookie"] and "; Secure" in r.headers["Set-Cookie"]


def test_settings_out_of_bounds_stop_the_api_at_start(cl):
    for name, value in (("REFRESH_MAX_AGE_S", "0"), ("REFRESH_REUSE_GRACE_MS", "60001"), ("COOKIE_SECURE", "2")):
        p = cl.start_process(f"api-bad-{name}", [cl.binary("calc-api")], {name: value, "API_PORT": "1"})
        p.expect_clean_exit = False
        assert p.wait(30) == 64, name
        assert name in p.log(), name


# ---- the dbagent methods underneath ---------------------------------------------------------------

ROTATED, REPLAYED, REUSED, UNKNOWN = (pb.RotateRefreshTokenReply.ROTATED, pb.RotateRefreshTokenReply.REPLAYED,
                                      pb.RotateRefreshTokenReply.REUSED, pb.RotateRefreshTokenReply.UNKNOWN)


def test_rotation_keeps_the_family_end_and_replays_only_the_same_live_successor(dba):
    u = dba.CreateUser(login=f"d{secrets.token_hex(4)}", password_hash="h").user
    now = int(time.time() * 1000)
    end = now + 60_000
    dba.StoreRefreshToken(user_id=u.id, token_hash=f"a1-{u.id}", expires_at_ms=now + 30_000, family_expires_at_ms=end)
    # A rotation asking for more than the family has left gets the family's end.
    r = dba.RotateRefreshToken(old_hash=f"a1-{u.id}", new_hash=f"a2-{u.id}", expires_at_ms=now + 3600_000, grace_ms=10_000)
    assert r.outcome == ROTATED and r.user_id == u.id and abs(r.expires_at_ms - end) <= 1, (r, end)
    # The same retry within the grace: the same successor, nothing new stored.
    r = dba.RotateRefreshToken(old_hash=f"a1-{u.id}", new_hash=f"a2-{u.id}", expires_at_ms=now + 3600_000, grace_ms=10_000)
    assert r.outcome == REPLAYED and r.user_id == u.id and abs(r.expires_at_ms - end) <= 1
    # A retry naming another successor is a copy of the token: the family is revoked.
    r = dba.RotateRefreshToken(old_hash=f"a1-{u.id}", new_hash=f"other-{u.id}", expires_at_ms=now + 3600_000, grace_ms=10_000)
    assert r.outcome == REUSED
    assert dba.RotateRefreshToken(old_hash=f"a2-{u.id}", new_hash=f"a3-{u.id}", expires_at_ms=end, grace_ms=10_000).outcome == REUSED
    # Without a family end of its own (an older caller) a family ends with its first token.
    dba.StoreRefreshToken(user_id=u.id, token_hash=f"b1-{u.id}", expires_at_ms=now + 30_000)
    r = dba.RotateRefreshToken(old_hash=f"b1-{u.id}", new_hash=f"b2-{u.id}", expires_at_ms=now + 3600_000)
    assert r.outcome == ROTATED and abs(r.expires_at_ms - (now + 30_000)) <= 1
    # No grace asked: the retry is a reuse.
    assert dba.RotateRefreshToken(old_hash=f"b1-{u.id}", new_hash=f"b2-{u.id}", expires_at_ms=now).outcome == REUSED
    assert dba.code_of("RotateRefreshToken", old_hash="x", new_hash="y", expires_at_ms=now, grace_ms=-1) == SC.INVALID_ARGUMENT


def test_change_password_needs_the_hash_it_checked(dba):
    u = dba.CreateUser(login=f"d{secrets.token_hex(4)}", password_hash="h1").user
    far = int(time.time() * 1000) + 3600_000
    dba.StoreRefreshToken(user_id=u.id, token_hash=f"p1-{u.id}", expires_at_ms=far, family_expires_at_ms=far)
    args = dict(user_id=u.id, old_password_hash="h1", new_password_hash="h2", token_hash=f"p2-{u.id}",
                expires_at_ms=far, family_expires_at_ms=far)
    for missing in ("user_id", "old_password_hash", "new_password_hash", "token_hash", "expires_at_ms"):
        assert dba.code_of("ChangePassword", **dict(args, **{missing: type(args[missing])()})) == SC.INVALID_ARGUMENT
    dba.ChangePassword(**args)
    assert dba.FindUser(id=u.id).user.password_hash == "h2"
    # The old session is revoked, the new one rotates.
    assert dba.RotateRefreshToken(old_hash=f"p1-{u.id}", new_hash=f"p3-{u.id}", expires_at_ms=far).outcome == REUSED
    assert dba.RotateRefreshToken(old_hash=f"p2-{u.id}", new_hash=f"p4-{u.id}", expires_at_ms=far).outcome == ROTATED
    # A change checked against a hash that is no longer stored changes nothing.
    stale = dict(args, new_password_hash="h3", token_hash=f"p5-{u.id}")
    assert dba.code_of("ChangePassword", **stale) == SC.FAILED_PRECONDITION
    assert dba.FindUser(id=u.id).user.password_hash == "h2"
    assert dba.RotateRefreshToken(old_hash=f"p4-{u.id}", new_hash=f"p6-{u.id}", expires_at_ms=far).outcome == ROTATED
