"""What the dbagent system tests share: the module's dbagent, the calls every test makes through
it (users, expressions, taking and running nodes), snapshots of what a refused call must leave
unchanged, and a psql session that holds row locks."""

import itertools
import subprocess

import grpc
import pytest

import harness
from dba_client import DbaClient, RpcError, pb

SC = grpc.StatusCode
CLAIMED, FAILED = pb.ClaimNodeReply.CLAIMED, pb.ClaimNodeReply.FAILED
MAX_ATTEMPTS = 3
_seq = itertools.count(1)


@pytest.fixture(scope="module")
def dba(calc_session):
    cl = harness.Cluster(calc_session, "dbagent_rpc")
    try:
        cl.setup_resources()
        cl.start_dbagent(MAX_ATTEMPTS=str(MAX_ATTEMPTS), DBAGENT_THREADS="8")
        c = DbaClient(cl.env["DBAGENT_ADDR"], cl.env["DBAGENT_TOKEN"])
        c.cluster = cl
        c.psql = lambda sql: calc_session.psql(sql, db=cl.db)
        yield c
        c.close()
    finally:
        cl.close()


def unique(prefix):
    """A string no other call of this session gets: prefix and a number."""
    return f"{prefix}{next(_seq)}"


def new_user(c, admin=False):
    return c.CreateUser(login=f"user{next(_seq)}", password_hash="$argon2id$x", is_admin=admin).user


def create(c, uid, nodes, req_uid=None, text=None, **kw):
    req_uid = req_uid or f"r{next(_seq)}"
    return c.CreateExpression(user_id=uid, req_uid=req_uid, text=text or f"text-{req_uid}", nodes=nodes, **kw)


def drain(c):
    """Take every ready node (of any test), so the next TakeReady sees only what a test makes."""
    while c.TakeReady(max=1000).nodes:
        pass


def take(c, expr_id, want=1):
    """TakeReady until `want` nodes of expr_id (an id or a set of ids) are taken; returns them
    (others' nodes are ignored)."""
    got = []
    ids = expr_id if isinstance(expr_id, set) else {expr_id}

    def more():
        got.extend(t for t in c.TakeReady(max=1000).nodes if t.expression_id in ids)
        return len(got) >= want

    harness.wait_for(more, 10, f"{want} ready nodes of expression {expr_id}")
    return got


def expr(c, uid, eid):
    return c.GetExpression(user_id=uid, id=eid).expression


def events(c, uid, after=0):
    return list(c.ListEvents(user_id=uid, after_seq=after, limit=1000).events)


def answer(c, method, **fields):
    """What ClaimNode or CompleteNode says: "claimed", "failed" or "applied" (OK), or "stale" or
    "cancelled" (FAILED_PRECONDITION, whose message starts with that word)."""
    try:
        rep = c.call(method, **fields)
    except RpcError as e:
        return refusal(e)
    if method == "CompleteNode":
        return "applied"
    return {CLAIMED: "claimed", FAILED: "failed"}[rep.outcome]


def refusal(e):
    """The word a FAILED_PRECONDITION from ClaimNode or CompleteNode starts with."""
    assert isinstance(e, RpcError) and e.code == SC.FAILED_PRECONDITION, e
    word = e.details.split(":", 1)[0]
    assert word in ("stale", "cancelled"), e
    return word


def run_node(c, t, agent="agent-a", value=None):
    """Claim and complete a taken node with its true value; returns the claim reply."""
    cl = c.ClaimNode(node_id=t.node_id, epoch=t.epoch, agent=agent)
    assert cl.outcome == CLAIMED, cl
    v = {"+": cl.left + cl.right, "-": cl.left - cl.right, "*": cl.left * cl.right, "/": cl.left / cl.right}[cl.op]
    c.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent=agent, value=v if value is None else value)
    return cl


def node_state(c, node_id):
    state, epoch = c.psql(f"SELECT state, epoch FROM nodes WHERE id = {node_id}").strip().split("|")
    return state, int(epoch)


def snapshot(c, uid, eid):
    """Everything a rejected call must leave unchanged: the expression, its nodes, the events."""
    e = expr(c, uid, eid)
    e.ClearField("retained_for_ms")  # a duration from the read: it shrinks from one read to the next
    nodes = c.psql(f"SELECT id, state, epoch, attempts, agent, result FROM nodes WHERE expression_id = {eid} ORDER BY id")
    return (e.SerializeToString(), nodes, len(events(c, uid)))



HOLDER_MARK = "/* test lock holder */"


def hold_transaction(cluster, sql, seconds):
    """A psql session that runs sql (taking locks) in a transaction and keeps it open for
    `seconds` or until end_transaction; returns once sql is done (the session sleeps)."""
    cmd = [harness.SERVERS_CLI, "psql", cluster.servers.pg_dir, str(cluster.servers.pg_port), "-d", cluster.db,
           "-c", f"{HOLDER_MARK} BEGIN; {sql}; SELECT pg_sleep({seconds}); COMMIT;"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    asleep = (f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '{HOLDER_MARK}%'"
              " AND wait_event = 'PgSleep'")
    harness.wait_for(lambda: cluster.servers.psql(asleep, db=cluster.db).strip() != "0", 10, "the lock holder")
    return p


def end_transaction(cluster, holder):
    """Ends the holder's transaction (rolled back), and with it its locks."""
    cluster.servers.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '{HOLDER_MARK}%'",
                         db=cluster.db)
    holder.kill()
    holder.wait()


def hold_lock(dba, sql, seconds):
    return hold_transaction(dba.cluster, sql, seconds)


def waiting_dbagent_backends(dba):
    return int(dba.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'calc-dbagent' AND wait_event_type = 'Lock'"))


def release(dba, holder):
    end_transaction(dba.cluster, holder)
