"""Helpers of the API system tests: a cluster shared by one test module, and JWT forging."""

import base64
import hashlib
import hmac
import json
import secrets
import time

import harness


def module_cluster(calc_session, name, agents=2, env=None):
    """A whole cluster for one test module (tests in it use their own users)."""
    c = harness.Cluster(calc_session, name, env=env)
    c.setup_resources()
    c.start(agents=agents)
    return c


def new_user(cluster, prefix="u", api=None):
    """A fresh registered and logged-in user's client."""
    client = cluster.api_client(api)
    client.register(f"{prefix}{secrets.token_hex(4)}", "password1")
    client.login()
    return client


def error_of(r, status):
    """The JSON error body of reply r, which must have that status and name the problem."""
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status and body["error"]
    return body


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_jwt(claims, secret, alg="HS256"):
    """A JWT with the given claims, signed with secret (or unsigned for alg none)."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    if alg == "none":
        return f"{header}.{payload}."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret.encode(), signing_input, digest).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def claims(user_id, **over):
    now = int(time.time())
    c = {"iss": "calc-api", "sub": str(user_id), "userId": user_id, "iat": now, "exp": now + 600}
    c.update(over)
    return c


def expression(api, eid):
    r = api.get(f"/expression/{eid}")
    assert r.status_code == 200, r.text
    return r.json()["expression"]


def submit(api, text, **extra):
    r = api.post("/expression", json=dict(extra, expression=text))
    assert r.status_code == 200, r.text
    return r.json()["expression"]["expression_id"]


def admin_client(cluster):
    """The configured admin's logged-in client."""
    admin = cluster.api_client()
    admin.login(cluster.admin_login, cluster.admin_password)
    return admin


def set_delays(cluster, ms):
    """Every operator's delay set to ms, by the admin."""
    r = admin_client(cluster).post("/duration", json={"+": ms, "-": ms, "*": ms, "/": ms})
    assert r.status_code == 200, r.text
