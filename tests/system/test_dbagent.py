"""calc-dbagent over gRPC against a real PostgreSQL: every RPC, its success and its errors, fencing,
races, events, the long poll, MAX_ATTEMPTS, RequeueStale, deadlines (more: test_dbagent_batch.py).

One dbagent (MAX_ATTEMPTS=3) and one database serve the whole module; every test makes its own users,
and a test that needs the ready set to itself drains it first (drain()).
"""

import concurrent.futures as cf
import threading
import time

import grpc
import pytest

import harness
from dba_client import RpcError, inner, leaf, pb, plan_2_plus_2_times_2, plan_wide
from dbagent_helpers import (CLAIMED, FAILED, HOLDER_MARK, MAX_ATTEMPTS, SC, answer, create, dba, drain, events, expr,
                             hold_lock, new_user, node_state, release, run_node, snapshot, take, unique,
                             waiting_dbagent_backends)


# ---- service token -----------------------------------------------------------------------------


def test_wrong_or_missing_token_is_unauthenticated(dba):
    for token in ("", "x" * 48):
        with pytest.raises(RpcError) as e:
            dba.call("GetDurations", token=token)
        assert e.value.code == SC.UNAUTHENTICATED
    assert dba.code_of("GetDurations") == SC.OK


# ---- users and refresh tokens ------------------------------------------------------------------


def test_users(dba):
    u = dba.CreateUser(login="ann", password_hash="h1").user
    assert u.id > 0 and u.login == "ann" and not u.is_admin and u.created_at_ms > 0
    assert dba.code_of("CreateUser", login="ann", password_hash="h2") == SC.ALREADY_EXISTS
    assert dba.code_of("CreateUser", login="", password_hash="h") == SC.INVALID_ARGUMENT
    assert dba.code_of("CreateUser", login="bob", password_hash="") == SC.INVALID_ARGUMENT
    assert dba.FindUser(login="ann").user.id == u.id
    assert dba.FindUser(id=u.id).user.password_hash == "h1"
    assert dba.code_of("FindUser", login="nobody") == SC.NOT_FOUND
    assert dba.code_of("FindUser", id=10**12) == SC.NOT_FOUND
    # EnsureAdmin promotes an existing login (and sets the configured password), or creates it.
    a = dba.EnsureAdmin(login="ann", password_hash="h3").user
    assert a.id == u.id and a.is_admin and a.password_hash == "h3"
    b = dba.EnsureAdmin(login="root", password_hash="h4").user
    assert b.is_admin and dba.FindUser(login="root").user.id == b.id
    assert dba.code_of("EnsureAdmin", login="", password_hash="h") == SC.INVALID_ARGUMENT


def test_refresh_tokens_rotate_and_reuse_revokes_family(dba):
    u = new_user(dba)
    far = int(time.time() * 1000) + 3600_000
    fam = dba.StoreRefreshToken(user_id=u.id, token_hash="t1", expires_at_ms=far).family
    assert fam == "t1"
    assert dba.code_of("StoreRefreshToken", user_id=u.id, token_hash="", expires_at_ms=far) == SC.INVALID_ARGUMENT
    # The hash is the request's id: storing the same token again is a retry and changes nothing;
    # the same hash for another user is refused.
    assert dba.StoreRefreshToken(user_id=u.id, token_hash="t1", expires_at_ms=far).family == "t1"
    assert dba.code_of("StoreRefreshToken", user_id=new_user(dba).id, token_hash="t1", expires_at_ms=far) == SC.ALREADY_EXISTS
    assert dba.psql("SELECT count(*), min(user_id) FROM refresh_tokens WHERE token_hash = 't1'").strip() == f"1|{u.id}"
    assert dba.code_of("StoreRefreshToken", user_id=10**12, token_hash="tx", expires_at_ms=far) == SC.NOT_FOUND
    r = dba.RotateRefreshToken(old_hash="t1", new_hash="t2", expires_at_ms=far)
    assert r.outcome == pb.RotateRefreshTokenReply.ROTATED and r.user_id == u.id
    r = dba.RotateRefreshToken(old_hash="t2", new_hash="t3", expires_at_ms=far)
    assert r.outcome == pb.RotateRefreshTokenReply.ROTATED
    # t1 was rotated already: someone kept a copy. The whole family (t3 too) is revoked.
    assert dba.RotateRefreshToken(old_hash="t1", new_hash="t4", expires_at_ms=far).outcome == pb.RotateRefreshTokenReply.REUSED
    assert dba.RotateRefreshToken(old_hash="t3", new_hash="t5", expires_at_ms=far).outcome == pb.RotateRefreshTokenReply.REUSED
    assert dba.psql("SELECT count(*) FROM refresh_tokens WHERE token_hash IN ('t4', 't5')").strip() == "0"
    assert dba.RotateRefreshToken(old_hash="nope", new_hash="t6", expires_at_ms=far).outcome == pb.RotateRefreshTokenReply.UNKNOWN
    # An expired token is unknown; RevokeRefreshFamily revokes every token of the family.
    dba.StoreRefreshToken(user_id=u.id, token_hash="old", expires_at_ms=int(time.time() * 1000) - 1000)
    assert dba.RotateRefreshToken(old_hash="old", new_hash="t7", expires_at_ms=far).outcome == pb.RotateRefreshTokenReply.UNKNOWN
    f2 = dba.StoreRefreshToken(user_id=u.id, token_hash="s1", expires_at_ms=far).family
    dba.StoreRefreshToken(user_id=u.id, token_hash="s2", family=f2, expires_at_ms=far)
    dba.RevokeRefreshFamily(token_hash="s2")
    assert dba.psql(f"SELECT bool_and(revoked) FROM refresh_tokens WHERE family = '{f2}'").strip() == "t"


# ---- expressions -------------------------------------------------------------------------------


def test_create_expression_idempotent_and_errors(dba):
    u = new_user(dba)
    r = create(dba, u.id, plan_2_plus_2_times_2(), req_uid="same", text="2+2*2", depth=2, critical_path_ms=3)
    assert r.created and r.expression.status == "new" and r.expression.node_count == 2
    assert r.expression.depth == 2 and r.expression.critical_path_ms == 3
    again = create(dba, u.id, plan_2_plus_2_times_2(), req_uid="same", text="2+2*2")
    assert not again.created and again.expression.id == r.expression.id
    with pytest.raises(RpcError) as e:
        create(dba, u.id, plan_2_plus_2_times_2(), req_uid="same", text="2+2*3")
    assert e.value.code == SC.ALREADY_EXISTS
    # The same req_uid of another user is another expression.
    other = new_user(dba)
    assert create(dba, other.id, plan_2_plus_2_times_2(), req_uid="same", text="2+2*2").expression.id != r.expression.id
    # A lone number is done at once.
    lone = create(dba, u.id, [], text="7", value=7.0).expression
    assert lone.status == "ok" and lone.has_result and lone.result == 7.0 and lone.finished_at_ms > 0
    assert dba.code_of("CreateExpression", user_id=10**12, req_uid="x", text="1+1", nodes=[leaf("+", 1, 1)]) == SC.NOT_FOUND
    bad_plans = [
        [leaf("%", 1, 1)],  # operator
        [pb.PlanNode(op="+", left=pb.Operand(value=1), parent=-1)],  # missing operand
        [leaf("+", 1, 1, parent=5), inner("+", 0, 1.0)],  # parent index
        [inner("+", 1, 1.0, parent=1), leaf("+", 1, 1, parent=-1)],  # child after parent
        [leaf("+", 1, 1, delay_ms=70000)],  # delay
        [leaf("+", float("inf"), 1)],  # non-finite literal
        [leaf("+", 1, 2, parent=1), inner("*", 0, 0)],  # one child as both operands
        [leaf("+", 1, 2, parent=2), leaf("+", 3, 4, parent=2), inner("*", 0, 5.0)],  # a child left out
    ]
    for nodes in bad_plans:
        assert dba.code_of("CreateExpression", user_id=u.id, req_uid=unique("b"), text="x", nodes=nodes) == SC.INVALID_ARGUMENT
    assert dba.code_of("CreateExpression", user_id=u.id, req_uid="", text="1+1", nodes=[leaf("+", 1, 1)]) == SC.INVALID_ARGUMENT
    # max_unfinished: the user has one unfinished expression ("same").
    assert dba.code_of("CreateExpression", user_id=u.id, req_uid="lim", text="1+1", nodes=[leaf("+", 1, 1)], max_unfinished=1) == SC.RESOURCE_EXHAUSTED


def test_get_list_and_isolation(dba):
    u, v = new_user(dba), new_user(dba)
    ids = [create(dba, u.id, [leaf("+", i, 1)]).expression.id for i in range(5)]
    assert expr(dba, u.id, ids[0]).id == ids[0]
    assert dba.code_of("GetExpression", user_id=v.id, id=ids[0]) == SC.NOT_FOUND  # another user's
    assert dba.code_of("GetExpression", user_id=u.id, id=10**12) == SC.NOT_FOUND
    page1 = dba.ListExpressions(user_id=u.id, limit=3)
    assert [e.id for e in page1.expressions] == ids[::-1][:3]  # newest first
    page2 = dba.ListExpressions(user_id=u.id, limit=3, before_id=page1.next_before_id)
    assert [e.id for e in page2.expressions] == ids[::-1][3:] and page2.next_before_id == 0
    assert list(dba.ListExpressions(user_id=v.id).expressions) == []
    # Many lookups at once: each (user, id) pair found once; another user's and missing ones absent.
    got = dba.GetExpressions(user_ids=[u.id, u.id, v.id, u.id, u.id], ids=[ids[1], ids[1], ids[2], 10**12, ids[4]])
    assert sorted(e.id for e in got.expressions) == [ids[1], ids[4]]
    assert all(e.user_id == u.id for e in got.expressions)
    assert list(dba.GetExpressions(user_ids=[], ids=[]).expressions) == []
    assert dba.code_of("GetExpressions", user_ids=[u.id], ids=[ids[0], ids[1]]) == SC.INVALID_ARGUMENT
    assert dba.code_of("GetExpressions", user_ids=[u.id] * 1001, ids=[ids[0]] * 1001) == SC.INVALID_ARGUMENT


def test_cancel_expression(dba):
    u, v = new_user(dba), new_user(dba)
    e = create(dba, u.id, plan_wide(3)).expression
    t = take(dba, e.id, 3)
    dba.ClaimNode(node_id=t[0].node_id, epoch=t[0].epoch, agent="agent-a")
    assert dba.code_of("CancelExpression", user_id=v.id, id=e.id) == SC.NOT_FOUND
    c = dba.CancelExpression(user_id=u.id, id=e.id).expression
    assert c.status == "cancelled" and c.finished_at_ms > 0
    states = dba.psql(f"SELECT DISTINCT state FROM nodes WHERE expression_id = {e.id}").split()
    assert states == ["cancelled"]
    assert dba.code_of("CancelExpression", user_id=u.id, id=e.id) == SC.FAILED_PRECONDITION
    # The messages still on their way are answered "cancelled"; the running node cannot complete.
    assert answer(dba, "ClaimNode", node_id=t[1].node_id, epoch=t[1].epoch, agent="agent-a") == "cancelled"
    assert answer(dba, "CompleteNode", node_id=t[0].node_id, epoch=t[0].epoch, agent="agent-a", value=1) == "stale"
    assert [x.kind for x in events(dba, u.id)][-1] == "cancelled"


# ---- the life of an expression -------------------------------------------------------------


def test_full_run_longest_path_first_and_events(dba):
    drain(dba)
    u = new_user(dba)
    # (1+2) * (3+4) - 5: node tails make the order of TakeReady checkable.
    nodes = [
        leaf("+", 1, 2, parent=2, tail_ms=30),
        leaf("+", 3, 4, parent=2, tail_ms=40),
        inner("*", 0, 1, parent=3, tail_ms=20),
        inner("-", 2, 5.0, tail_ms=10),
    ]
    e = create(dba, u.id, nodes, text="(1+2)*(3+4)-5").expression
    got = dba.TakeReady(max=10).nodes
    assert [t.expression_id for t in got] == [e.id, e.id]
    ids = [t.node_id for t in got]
    assert ids[0] > ids[1]  # tail 40 (the second leaf) before tail 30
    assert all(t.epoch == 1 for t in got)
    assert list(dba.TakeReady(max=10).nodes) == []  # never handed out twice
    for t in got:
        run_node(dba, t)
    assert expr(dba, u.id, e.id).status == "in_progress"
    (mul,) = dba.TakeReady(max=10).nodes
    cl = run_node(dba, mul)
    assert (cl.op, cl.left, cl.right) == ("*", 3.0, 7.0)
    (root,) = dba.TakeReady(max=10).nodes
    cl = dba.ClaimNode(node_id=root.node_id, epoch=root.epoch, agent="agent-b")
    assert (cl.op, cl.left, cl.right, cl.attempt) == ("-", 21.0, 5.0, 1)
    done = dba.CompleteNode(node_id=root.node_id, epoch=root.epoch, agent="agent-b", value=16)
    assert done.expression_finished
    final = expr(dba, u.id, e.id)
    assert (final.status, final.result, final.nodes_done) == ("ok", 16.0, 4)
    assert final.started_at_ms > 0 and final.finished_at_ms >= final.started_at_ms
    ev = events(dba, u.id)
    assert [x.kind for x in ev] == ["created", "started"] + ["node"] * 4 + ["finished"]
    assert [x.seq for x in ev] == list(range(1, 8))
    assert all(x.expression_id == e.id for x in ev)
    assert [x.seq for x in dba.ListEvents(user_id=u.id, after_seq=3, limit=2).events] == [4, 5]
    assert events(dba, new_user(dba).id) == []


def test_error_fails_expression_and_cancels_the_rest(dba):
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(3, op="/")).expression
    t = take(dba, e.id, 3)
    dba.ClaimNode(node_id=t[0].node_id, epoch=t[0].epoch, agent="agent-a")
    dba.ClaimNode(node_id=t[1].node_id, epoch=t[1].epoch, agent="agent-a")
    done = dba.CompleteNode(node_id=t[0].node_id, epoch=t[0].epoch, agent="agent-a", error="division by zero")
    assert done.expression_finished
    f = expr(dba, u.id, e.id)
    assert f.status == "error" and "division by zero" in f.error
    states = dba.psql(f"SELECT state, count(*) FROM nodes WHERE expression_id = {e.id} GROUP BY 1 ORDER BY 1").split()
    assert states == ["cancelled|4", "failed|1"]
    assert answer(dba, "CompleteNode", node_id=t[1].node_id, epoch=t[1].epoch, agent="agent-a", value=1) == "stale"
    assert answer(dba, "ClaimNode", node_id=t[2].node_id, epoch=t[2].epoch, agent="agent-a") == "cancelled"
    assert events(dba, u.id)[-1].kind == "failed"
    # A non-finite value is an error too.
    e2 = create(dba, u.id, [leaf("*", 1e308, 10)]).expression
    (t2,) = take(dba, e2.id)
    dba.ClaimNode(node_id=t2.node_id, epoch=t2.epoch, agent="agent-a")
    assert dba.CompleteNode(node_id=t2.node_id, epoch=t2.epoch, agent="agent-a", value=float("inf")).expression_finished
    assert expr(dba, u.id, e2.id).status == "error"


def test_claim_and_complete_argument_errors(dba):
    assert dba.code_of("ClaimNode", node_id=10**12, epoch=1, agent="a") == SC.NOT_FOUND
    assert dba.code_of("ClaimNode", node_id=1, epoch=1, agent="") == SC.INVALID_ARGUMENT
    assert dba.code_of("ClaimNode", node_id=0, epoch=1, agent="a") == SC.INVALID_ARGUMENT
    assert dba.code_of("CompleteNode", node_id=10**12, epoch=1, agent="a", value=1) == SC.NOT_FOUND
    assert dba.code_of("CompleteNode", node_id=1, epoch=1, agent="a") == SC.INVALID_ARGUMENT  # no outcome
    assert dba.code_of("CompleteNode", node_id=1, epoch=1, agent="", value=1) == SC.INVALID_ARGUMENT
    assert dba.code_of("CompleteNode", node_id=1, epoch=1, agent="a", error="") == SC.INVALID_ARGUMENT


def test_more_bad_arguments_are_refused_and_change_nothing(dba):
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression
    (t, _) = take(dba, e.id, 2)
    long_agent = "a" * 129
    assert dba.code_of("ClaimNode", node_id=t.node_id, epoch=0, agent="a") == SC.INVALID_ARGUMENT
    assert dba.code_of("ClaimNode", node_id=t.node_id, epoch=t.epoch, agent=long_agent) == SC.INVALID_ARGUMENT
    assert dba.code_of("CompleteNode", node_id=t.node_id, epoch=t.epoch, agent=long_agent, value=1) == SC.INVALID_ARGUMENT
    assert node_state(dba, t.node_id) == ("queued", t.epoch)
    assert dba.code_of("MarkQueued", failed=[pb.TakenNode(node_id=t.node_id, epoch=t.epoch)] * 10001) == SC.INVALID_ARGUMENT
    assert node_state(dba, t.node_id) == ("queued", t.epoch)
    assert dba.code_of("RequeueStale", heartbeat_timeout_ms=1, queued_timeout_ms=1, orphan_grace_ms=-1) == SC.INVALID_ARGUMENT
    assert node_state(dba, t.node_id) == ("queued", t.epoch)
    # CreateExpression: no text, a negative delay, more nodes than a plan may have.
    assert dba.code_of("CreateExpression", user_id=u.id, req_uid="bad1", text="", nodes=[leaf("+", 1, 1)]) == SC.INVALID_ARGUMENT
    assert dba.code_of("CreateExpression", user_id=u.id, req_uid="bad2", text="1+1", nodes=[leaf("+", 1, 1, delay_ms=-1)]) == SC.INVALID_ARGUMENT
    with pytest.raises(RpcError) as err:
        dba.CreateExpression(user_id=u.id, req_uid="bad3", text="big", nodes=[leaf("+", 1, 1)] * 100001)
    assert err.value.code == SC.INVALID_ARGUMENT and "too many nodes" in err.value.details
    assert [x.id for x in dba.ListExpressions(user_id=u.id, limit=10).expressions] == [e.id]
    # Users and tokens.
    assert dba.code_of("EnsureAdmin", login="boss", password_hash="") == SC.INVALID_ARGUMENT
    assert dba.code_of("FindUser", login="boss") == SC.NOT_FOUND
    far = int(time.time() * 1000) + 3600_000
    dba.StoreRefreshToken(user_id=u.id, token_hash=f"rt-{u.id}", expires_at_ms=far)
    dba.StoreRefreshToken(user_id=u.id, token_hash=f"taken-{u.id}", expires_at_ms=far)
    assert dba.code_of("RotateRefreshToken", old_hash=f"rt-{u.id}", new_hash="", expires_at_ms=far) == SC.INVALID_ARGUMENT
    assert dba.code_of("RotateRefreshToken", old_hash=f"rt-{u.id}", new_hash=f"taken-{u.id}", expires_at_ms=far) == SC.ALREADY_EXISTS
    # Neither marked the old token replaced: it still rotates once.
    r = dba.RotateRefreshToken(old_hash=f"rt-{u.id}", new_hash=f"rt2-{u.id}", expires_at_ms=far)
    assert r.outcome == pb.RotateRefreshTokenReply.ROTATED and r.user_id == u.id
    # SetDurations on behalf of a user that does not exist changes no duration.
    before = dba.GetDurations()
    assert dba.code_of("SetDurations", user_id=10**12, durations=[pb.Duration(op="+", ms=4321)]) == SC.NOT_FOUND
    assert dba.GetDurations() == before
    # A request that is not the method's message at all.
    raw = dba.channel.unary_unary("/calc.v1.DbAgent/ClaimNode")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff", timeout=5, metadata=[("x-calc-token", dba.token)])
    assert err.value.code() == SC.INVALID_ARGUMENT


# ---- fencing -----------------------------------------------------------------------------------


def test_fencing_rejects_and_changes_nothing(dba):
    u = new_user(dba)
    e = create(dba, u.id, plan_2_plus_2_times_2()).expression
    (t,) = take(dba, e.id)
    # A stale epoch cannot claim.
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch + 1, agent="agent-a") == "stale"
    assert snapshot(dba, u.id, e.id) == before
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == "claimed"
    # A second claim of the same message (another agent got a duplicate) is stale.
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b") == "stale"
    # Another agent's completion, and a completion at another epoch, are stale.
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b", value=99) == "stale"
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch + 1, agent="agent-a", value=99) == "stale"
    assert snapshot(dba, u.id, e.id) == before
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=4) == "applied"
    # A second completion (the node ran twice) is stale and changes nothing.
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=5) == "stale"
    assert snapshot(dba, u.id, e.id) == before
    # A completion after a requeue: agent-a goes silent while holding the root; RequeueStale gives the
    # root a new epoch; agent-a's late completion is rejected; the new holder's is applied.
    (root,) = take(dba, e.id)
    assert answer(dba, "ClaimNode", node_id=root.node_id, epoch=root.epoch, agent="agent-a") == "claimed"
    harness.wait_for(lambda: dba.RequeueStale(heartbeat_timeout_ms=1, queued_timeout_ms=3600_000).requeued >= 1, 10, "requeue")
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "CompleteNode", node_id=root.node_id, epoch=root.epoch, agent="agent-a", value=6) == "stale"
    assert answer(dba, "ClaimNode", node_id=root.node_id, epoch=root.epoch, agent="agent-a") == "stale"
    assert snapshot(dba, u.id, e.id) == before
    (again,) = take(dba, e.id)
    assert again.node_id == root.node_id and again.epoch == root.epoch + 2  # requeue, then take
    run_node(dba, again, agent="agent-c")
    assert expr(dba, u.id, e.id).result == 6.0


def test_a_taken_node_comes_with_its_work_and_completes_without_a_claim(dba):
    """TakeReady hands each node with its operation, operands, delay and attempts, so that a node
    of no delay can run without ClaimNode: its completion at the taken epoch is the lease. It counts
    the attempt and starts the expression; a duplicate of the message (another agent, the same
    epoch) is then stale and changes nothing."""
    u = new_user(dba)
    e = create(dba, u.id, [leaf("*", 3, 4, parent=1, tail_ms=2, delay_ms=0), inner("-", 20.0, 0, tail_ms=1)]).expression
    (t,) = take(dba, e.id)
    assert (t.has_work, t.op, t.left, t.right, t.delay_ms, t.attempts) == (True, "*", 3, 4, 0, 0)
    assert expr(dba, u.id, e.id).status == "new"
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=12) == "applied"
    assert dba.psql(f"SELECT state, agent, attempts, started_at IS NOT NULL FROM nodes WHERE id = {t.node_id}").strip() == "done|agent-a|1|t"
    x = expr(dba, u.id, e.id)
    assert x.status == "in_progress" and x.started_at_ms > 0
    assert [v.kind for v in events(dba, u.id) if v.expression_id == e.id] == ["created", "started", "node"]
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b", value=12) == "stale"
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b") == "stale"
    assert snapshot(dba, u.id, e.id) == before
    (root,) = take(dba, e.id)
    assert (root.op, root.left, root.right, root.attempts) == ("-", 20, 12, 0)
    run_node(dba, root, agent="agent-b")
    assert expr(dba, u.id, e.id).result == 8.0


# ---- MAX_ATTEMPTS, RequeueStale, MarkQueued -----------------------------------------------------


def test_max_attempts_fails_node_and_expression(dba):
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression
    t = take(dba, e.id, 2)
    node = t[0]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        cl = dba.ClaimNode(node_id=node.node_id, epoch=node.epoch, agent="agent-crashy")
        assert cl.outcome == CLAIMED and cl.attempt == attempt
        # The agent dies (never heartbeats): the monitor requeues the node with a new epoch.
        harness.wait_for(lambda: dba.RequeueStale(heartbeat_timeout_ms=1, queued_timeout_ms=3600_000).requeued >= 1, 10, "requeue")
        (node,) = [x for x in take(dba, e.id) if x.node_id == node.node_id]
    cl = dba.ClaimNode(node_id=node.node_id, epoch=node.epoch, agent="agent-crashy")
    assert cl.outcome == FAILED
    f = expr(dba, u.id, e.id)
    assert f.status == "error" and f"after {MAX_ATTEMPTS} attempts" in f.error
    assert answer(dba, "ClaimNode", node_id=t[1].node_id, epoch=t[1].epoch, agent="agent-a") == "cancelled"


def test_requeue_stale_queued_and_mark_queued(dba):
    assert dba.code_of("RequeueStale", heartbeat_timeout_ms=0, queued_timeout_ms=1) == SC.INVALID_ARGUMENT
    assert dba.code_of("RequeueStale", heartbeat_timeout_ms=1, queued_timeout_ms=0) == SC.INVALID_ARGUMENT
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(3)).expression
    t = take(dba, e.id, 3)
    # A publish that failed hands its node back to ready; a wrong epoch changes nothing.
    dba.MarkQueued(published=[t[0]], failed=[t[1], pb.TakenNode(node_id=t[2].node_id, epoch=t[2].epoch + 5)])
    (back,) = take(dba, e.id)
    assert back.node_id == t[1].node_id and back.epoch == t[1].epoch + 1
    # A message lost on the way: nobody claims t[0]; after queued_timeout it is ready again.
    def all_ready():
        dba.RequeueStale(heartbeat_timeout_ms=3600_000, queued_timeout_ms=1)
        return all(node_state(dba, x.node_id)[0] == "ready" for x in t)

    harness.wait_for(all_ready, 10, "the queued nodes to be requeued")
    again = take(dba, e.id, 3)
    assert {x.node_id for x in again} == {t[0].node_id, t[1].node_id, t[2].node_id}
    assert answer(dba, "ClaimNode", node_id=t[0].node_id, epoch=t[0].epoch, agent="agent-a") == "stale"


def test_requeue_orphan_of_a_live_agent(dba):
    """An agent computed a node but could not report it (dbagent was away longer than its retry
    window) and sent the message to the retry queue: the node is still 'running' under that agent,
    which is alive, so the retried ClaimNode at the same epoch is stale. Its heartbeats no longer
    list the node: RequeueStale gives the node a new epoch once a heartbeat received at least
    orphan_grace_ms after the claim misses it."""
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression
    t = take(dba, e.id, 2)
    held, lost = t
    grace = 300
    hb = dict(heartbeat_timeout_ms=60_000, queued_timeout_ms=3600_000, orphan_grace_ms=grace)
    for x in t:
        assert answer(dba, "ClaimNode", node_id=x.node_id, epoch=x.epoch, agent="agent-o") == "claimed"
    # A heartbeat whose snapshot was taken just before the claims lists neither: within the grace
    # this must not requeue anything.
    dba.Heartbeat(agent="agent-o", workers=2, busy=0, nodes=[])
    dba.RequeueStale(**hb)
    assert node_state(dba, lost.node_id) == ("running", lost.epoch)
    assert answer(dba, "ClaimNode", node_id=lost.node_id, epoch=lost.epoch, agent="agent-o") == "stale"  # the stuck retry

    def requeued():
        dba.Heartbeat(agent="agent-o", workers=2, busy=1, nodes=[held.node_id])
        dba.RequeueStale(**hb)
        return node_state(dba, lost.node_id) == ("ready", lost.epoch + 1)

    t0 = time.monotonic()
    harness.wait_for(requeued, 10, "the orphaned node to be requeued")
    assert node_state(dba, held.node_id) == ("running", held.epoch)
    assert time.monotonic() - t0 < 5
    (back,) = take(dba, e.id)
    assert back.node_id == lost.node_id and back.epoch == lost.epoch + 2  # requeue, then take
    assert answer(dba, "CompleteNode", node_id=lost.node_id, epoch=lost.epoch, agent="agent-o", value=1) == "stale"
    run_node(dba, back, agent="agent-p")
    # The node the agent still holds stays its own.
    dba.RequeueStale(**hb)
    assert node_state(dba, held.node_id) == ("running", held.epoch)
    assert answer(dba, "CompleteNode", node_id=held.node_id, epoch=held.epoch, agent="agent-o", value=1) == "applied"


# ---- agents and durations ----------------------------------------------------------------------


def test_heartbeat_and_list_agents(dba):
    dba.Heartbeat(agent="agent-h", workers=4, busy=2, nodes=[1, 2])
    a = {x.name: x for x in dba.ListAgents(alive_within_ms=60_000).agents}["agent-h"]
    assert (a.workers, a.busy, a.alive) == (4, 2, True) and a.last_heartbeat_at_ms >= a.created_at_ms > 0
    assert dba.code_of("Heartbeat", agent="", workers=1) == SC.INVALID_ARGUMENT
    assert dba.code_of("Heartbeat", agent="x" * 200, workers=1) == SC.INVALID_ARGUMENT
    assert dba.code_of("Heartbeat", agent="a", workers=1, nodes=list(range(1, 5000))) == SC.INVALID_ARGUMENT


def test_durations(dba):
    admin = new_user(dba, admin=True)
    d = dba.GetDurations().durations
    assert [x.op for x in d] == ["+", "-", "*", "/"]
    r = dba.SetDurations(user_id=admin.id, durations=[pb.Duration(op="*", ms=65535), pb.Duration(op="+", ms=0)])
    got = {x.op: x for x in r.durations}
    assert got["*"].ms == 65535 and got["*"].updated_by == admin.id and got["+"].ms == 0
    assert {x.op: x.ms for x in dba.GetDurations().durations}["*"] == 65535
    for bad in (pb.Duration(op="*", ms=65536), pb.Duration(op="*", ms=-1), pb.Duration(op="%", ms=1)):
        assert dba.code_of("SetDurations", user_id=admin.id, durations=[bad]) == SC.INVALID_ARGUMENT
    dba.SetDurations(user_id=admin.id, durations=[pb.Duration(op="*", ms=0)])


def test_a_plan_made_with_other_delays_is_refused(dba):
    """The API plans with the delays it read last and sends them along: a create whose delays are
    no longer in force (another API instance changed them) creates nothing and says so, and the
    API plans again. Without planned_delays (an API that read them just before), no check."""
    admin, u = new_user(dba, admin=True), new_user(dba)
    dba.SetDurations(user_id=admin.id, durations=[pb.Duration(op="+", ms=7), pb.Duration(op="/", ms=9)])
    try:
        now = [7, 0, 0, 9]  # + - * /
        for stale in ([0, 0, 0, 9], [7, 0, 0, 0], [7, 0, 1, 9]):
            assert dba.code_of("CreateExpression", user_id=u.id, req_uid="d1", text="2+2*2",
                               nodes=plan_2_plus_2_times_2(), planned_delays=stale) == SC.FAILED_PRECONDITION
        assert dba.psql(f"SELECT count(*) FROM expressions WHERE user_id = {u.id}").strip() == "0"
        r = create(dba, u.id, plan_2_plus_2_times_2(), req_uid="d1", text="2+2*2", planned_delays=now)
        assert r.created and r.delays_checked
        # The same req_uid again is the same expression, whatever the delays say now.
        r = create(dba, u.id, plan_2_plus_2_times_2(), req_uid="d1", text="2+2*2", planned_delays=[0, 0, 0, 0])
        assert not r.created and r.delays_checked
        r = create(dba, u.id, plan_2_plus_2_times_2(), req_uid="d2", text="2+2*2")
        assert r.created and not r.delays_checked
        assert dba.code_of("CreateExpression", user_id=u.id, req_uid="d3", text="1+1", nodes=[leaf("+", 1, 1)],
                           planned_delays=[7, 0, 0]) == SC.INVALID_ARGUMENT
    finally:
        dba.SetDurations(user_id=admin.id, durations=[pb.Duration(op="+", ms=0), pb.Duration(op="/", ms=0)])


# ---- races -------------------------------------------------------------------------------------


def test_concurrent_claims_have_one_winner(dba):
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(4)).expression
    for t in take(dba, e.id, 4):
        with cf.ThreadPoolExecutor(16) as ex:
            outs = list(ex.map(lambda i: answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent=f"agent-{i}"), range(16)))
        assert outs.count("claimed") == 1 and outs.count("stale") == 15
    assert dba.psql(f"SELECT max(attempts) FROM nodes WHERE expression_id = {e.id}").strip() == "1"


def test_concurrent_identical_create_makes_one_expression(dba):
    u = new_user(dba)
    barrier = threading.Barrier(12)

    def go(_):
        barrier.wait()
        return create(dba, u.id, plan_2_plus_2_times_2(), req_uid="dup", text="2+2*2")

    with cf.ThreadPoolExecutor(12) as ex:
        replies = list(ex.map(go, range(12)))
    assert len({r.expression.id for r in replies}) == 1
    assert sum(r.created for r in replies) == 1
    assert dba.psql(f"SELECT count(*) FROM expressions WHERE user_id = {u.id}").strip() == "1"
    assert dba.psql(f"SELECT count(*) FROM nodes n JOIN expressions e ON e.id = n.expression_id WHERE e.user_id = {u.id}").strip() == "2"


def test_concurrent_take_ready_is_disjoint(dba):
    drain(dba)
    u = new_user(dba)
    ids = {create(dba, u.id, plan_wide(50)).expression.id for _ in range(4)}
    barrier = threading.Barrier(8)

    def go(_):
        barrier.wait()
        out = []
        while True:
            got = dba.TakeReady(max=7).nodes
            if not got:
                return out
            out.extend(got)

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(go, range(8)))
    taken = [t.node_id for r in results for t in r]
    assert len(taken) == len(set(taken)) == 200
    assert {t.expression_id for r in results for t in r} == ids


def test_events_follow_commit_order(dba):
    """Concurrent writers append events for one user; a reader polling after the last seq it saw
    never finds a new event numbered at or below it, and in the end the numbers have no gap."""
    u = new_user(dba)
    exprs = [create(dba, u.id, plan_wide(8)).expression.id for _ in range(6)]
    nodes = take(dba, set(exprs), 48)
    stop = threading.Event()
    seen, problems = [], []

    def reader():
        last = 0
        while not stop.is_set() or last < expected[0]:
            for ev in dba.ListEvents(user_id=u.id, after_seq=last, limit=1000).events:
                if ev.seq <= last:
                    problems.append((ev.seq, last))
                if seen and ev.seq != seen[-1] + 1:
                    problems.append(("gap", seen[-1], ev.seq))
                seen.append(ev.seq)
                last = ev.seq

    expected = [10**9]
    rt = threading.Thread(target=reader)
    rt.start()
    try:
        with cf.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda t: run_node(dba, t, agent=f"agent-{t.node_id % 8}"), nodes))
        expected[0] = len(events(dba, u.id))
    finally:
        stop.set()
        rt.join(30)
    assert not problems, problems[:5]
    assert seen == list(range(1, expected[0] + 1))


# ---- the long poll -----------------------------------------------------------------------------


def listening(dba):
    """A TakeReady is waiting for nodes to become ready."""
    return dba.GetStats().long_polls_waiting > 0


def test_take_ready_is_woken_when_nodes_become_ready(dba):
    drain(dba)
    u = new_user(dba)
    with cf.ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        fut = ex.submit(dba.TakeReady, max=10, wait_ms=8000)
        harness.wait_for(lambda: listening(dba), 10, "TakeReady to listen")
        created = time.monotonic()
        e = create(dba, u.id, plan_wide(2)).expression
        got = fut.result(15)
        woke = time.monotonic()
    assert [t.expression_id for t in got.nodes] == [e.id, e.id]
    assert woke - created < 1.0, f"woken {woke - created:.3f}s after the create: a timeout, not a wake-up"
    assert woke - t0 < 7.0
    # Completing a child makes the parent ready: that wakes a waiter too.
    for t in got.nodes:
        dba.ClaimNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a")
    dba.CompleteNode(node_id=got.nodes[0].node_id, epoch=got.nodes[0].epoch, agent="agent-a", value=1)
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(dba.TakeReady, max=10, wait_ms=8000)
        harness.wait_for(lambda: listening(dba), 10, "TakeReady to listen")
        done_at = time.monotonic()
        dba.CompleteNode(node_id=got.nodes[1].node_id, epoch=got.nodes[1].epoch, agent="agent-a", value=2)
        (parent,) = fut.result(15).nodes
        assert time.monotonic() - done_at < 1.0
    assert parent.expression_id == e.id
    # Nothing ready: the call waits wait_ms and answers empty.
    t0 = time.monotonic()
    assert list(dba.TakeReady(max=10, wait_ms=300).nodes) == []
    assert 0.25 < time.monotonic() - t0 < 3


def test_room_set_free_wakes_no_long_poll_that_has_nothing_to_take(dba):
    """A completion that makes nothing ready (it continues with its parent) and a heartbeat set
    workers free: news only for a long poll whose take found nodes but no room. A poll with nothing
    ready sleeps on, so a burst of completions runs no takes beside it; a node made ready wakes it."""
    drain(dba)
    u = new_user(dba)
    e = create(dba, u.id, plan_2_plus_2_times_2()).expression
    (first,) = take(dba, e.id, 1)
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(dba.TakeReady, max=10, wait_ms=8000)
        harness.wait_for(lambda: listening(dba), 10, "TakeReady to listen")
        woken = dba.GetStats().long_poll_wakeups
        done = dba.CompleteNode(node_id=first.node_id, epoch=first.epoch, agent="agent-w", value=4, can_continue=True)
        root = done.next
        assert root.node_id > 0, "the completion continued with the root: nothing became ready"
        dba.Heartbeat(agent="agent-w", workers=4, busy=1, nodes=[root.node_id])
        # Each of the two woke the poll before; give it half a second to show it does not.
        quiet_until = time.monotonic() + 0.5
        while time.monotonic() < quiet_until:
            assert dba.GetStats().long_poll_wakeups == woken
            assert not fut.done()
            time.sleep(0.02)
        other = create(dba, u.id, plan_wide(2)).expression
        got = fut.result(15)
    assert {t.expression_id for t in got.nodes} == {other.id}
    assert dba.GetStats().long_poll_wakeups == woken + 1
    dba.CompleteNode(node_id=root.node_id, epoch=root.epoch, agent="agent-w", value=6)
    assert expr(dba, u.id, e.id).status == "ok"


# ---- the caller's deadline -----------------------------------------------------------------------


def test_a_long_poll_answers_empty_a_little_before_the_callers_deadline(dba):
    """TakeReady and WatchEvents asked to wait longer than the call's deadline answer, empty,
    about 50 ms before it (long_poll_wait_ms): the caller gets an answer, not DEADLINE_EXCEEDED,
    and starts its next poll at once."""
    drain(dba)
    u = new_user(dba)
    polls = (("TakeReady", dict(max=10, wait_ms=30000)),
             ("WatchEvents", dict(positions=[pb.WatchPosition(user_id=u.id, after_seq=0)], wait_ms=30000,
                                  watch_id=unique("deadline"))))
    for method, fields in polls:
        t0 = time.monotonic()
        rep = dba.call(method, timeout=1.5, **fields)
        took = time.monotonic() - t0
        assert 1.2 < took < 1.5, (method, took)
        assert not (rep.nodes if method == "TakeReady" else rep.events), rep



@pytest.mark.parametrize("path", ["transaction", "one_call"])
def test_deadline_is_the_statement_timeout(dba, path):
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression
    (t, _) = take(dba, e.id, 2)
    holder = hold_lock(dba, f"SELECT 1 FROM expressions WHERE id = {e.id} FOR UPDATE", 20)
    try:
        t0 = time.monotonic()
        with pytest.raises(RpcError) as err:
            if path == "transaction":  # db_begin: SET LOCAL statement_timeout
                dba.call("CancelExpression", timeout=0.5, user_id=u.id, id=e.id)
            else:  # db_call: set_config in the same round trip
                dba.call("ClaimNode", timeout=0.5, node_id=t.node_id, epoch=t.epoch, agent="agent-a")
        assert err.value.code == SC.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 2
        # dbagent gave up too: none of its backends still waits for the lock, long before it is freed.
        harness.wait_for(lambda: waiting_dbagent_backends(dba) == 0, 3, "dbagent to cancel its statement")
        assert holder.poll() is None
    finally:
        dba.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '{HOLDER_MARK}%'")
        holder.kill()
        holder.wait()
    # Once the lock is gone a claim succeeds (the thread and its connection are fine, and the
    # cancel that timed out left nothing behind).
    harness.wait_for(lambda: dba.code_of("ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == SC.OK, 10, "the claim")
    assert expr(dba, u.id, e.id).status == "in_progress"


def test_a_deadlock_is_aborted_and_changes_nothing(dba):
    """PostgreSQL ends a deadlocked call's transaction (SQLSTATE 40P01): the caller gets ABORTED, a
    status it may retry, and nothing of the call is kept; the retry then applies."""
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression
    (t, _) = take(dba, e.id, 2)
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == "claimed"
    # The holder locks the node, waits (with a deadline) until dbagent's completion, holding the
    # expression, waits for that node, then asks for the expression. Its own deadlock_timeout is
    # long, so dbagent's backend (1 s) finds the cycle and is the one PostgreSQL ends.
    # (pg_stat_clear_snapshot: within a transaction, pg_stat_activity is otherwise read once.)
    wait_for_dbagent = ("DO $w$ BEGIN FOR i IN 1..3000 LOOP EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity"
                        " WHERE application_name = 'calc-dbagent' AND wait_event_type = 'Lock');"
                        " PERFORM pg_sleep(0.01); PERFORM pg_stat_clear_snapshot(); END LOOP; END $w$")
    holder = hold_lock(dba, f"SET LOCAL deadlock_timeout = '60s'; SELECT 1 FROM nodes WHERE id = {t.node_id} FOR UPDATE;"
                            f" {wait_for_dbagent}; SELECT 1 FROM expressions WHERE id = {e.id} FOR UPDATE", 0)
    try:
        with pytest.raises(RpcError) as err:
            dba.call("CompleteNode", timeout=20, node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=7)
        assert err.value.code == SC.ABORTED, err.value
        assert "deadlock" in str(err.value)
        assert holder.wait(20) == 0  # the holder got the expression and committed
    finally:
        release(dba, holder)
    assert dba.psql(f"SELECT state, result IS NULL FROM nodes WHERE id = {t.node_id}").strip() == "running|t"
    assert dba.psql(f"SELECT nodes_done FROM expressions WHERE id = {e.id}").strip() == "0"
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=7) == "applied"


# ---- continuation ------------------------------------------------------------------------------


def test_a_completion_continues_with_the_parent_it_makes_ready_and_fencing_holds(dba):
    u = new_user(dba)
    e = create(dba, u.id, plan_2_plus_2_times_2()).expression
    (t,) = take(dba, e.id)
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == "claimed"
    done = dba.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=4, can_continue=True)
    nxt = done.next
    assert nxt.node_id and (nxt.op, nxt.left, nxt.right, nxt.attempt) == ("+", 2.0, 4.0, 1)
    # Claimed in the same transaction: running under agent-a at a new epoch, never ready or queued,
    # so no dispatcher takes it.
    assert node_state(dba, nxt.node_id) == ("running", nxt.epoch)
    assert dba.psql(f"SELECT agent, attempts, queued_at IS NULL FROM nodes WHERE id = {nxt.node_id}").strip() == "agent-a|1|t"
    assert not [x for x in dba.TakeReady(max=1000).nodes if x.expression_id == e.id]
    # agent-a goes silent: the continued node is handed back with a new epoch like any other, and
    # agent-a's late completion of it is stale and changes nothing.
    harness.wait_for(lambda: dba.RequeueStale(heartbeat_timeout_ms=1, queued_timeout_ms=3600_000).requeued >= 1, 10,
                     "requeue")
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "CompleteNode", node_id=nxt.node_id, epoch=nxt.epoch, agent="agent-a", value=6,
                  can_continue=True) == "stale"
    assert snapshot(dba, u.id, e.id) == before
    (again,) = take(dba, e.id)
    assert again.node_id == nxt.node_id and again.epoch == nxt.epoch + 2  # requeue, then take
    cl = run_node(dba, again, agent="agent-b")
    assert cl.attempt == 2
    f = expr(dba, u.id, e.id)
    assert f.status == "ok" and f.result == 6.0


def test_a_completion_sent_again_after_its_lost_reply_is_answered_as_before_and_changes_nothing(dba):
    """An agent sends a completion again when it got no reply (a broken connection, a deadline),
    though the first may have committed. The repeat is answered as the first was, the parent to
    continue with included (else the parent would wait, running under this agent, until the
    monitor took it back), and changes nothing; a copy from another agent, or with another value,
    is still stale."""
    u = new_user(dba)
    e = create(dba, u.id, plan_2_plus_2_times_2()).expression
    (t,) = take(dba, e.id)
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == "claimed"
    first = dba.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=4, can_continue=True).next
    assert first.node_id
    before = snapshot(dba, u.id, e.id)
    again = dba.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=4, can_continue=True).next
    assert again == first
    assert snapshot(dba, u.id, e.id) == before
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b", value=4) == "stale"
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=5) == "stale"
    assert snapshot(dba, u.id, e.id) == before
    # The root's, sent again after it finished the expression: applied, nothing changes.
    dba.CompleteNode(node_id=first.node_id, epoch=first.epoch, agent="agent-a", value=6, can_continue=True)
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "CompleteNode", node_id=first.node_id, epoch=first.epoch, agent="agent-a", value=6,
                  can_continue=True) == "applied"
    assert snapshot(dba, u.id, e.id) == before
    assert expr(dba, u.id, e.id).result == 6.0


def test_a_repeated_completion_does_not_continue_with_a_parent_its_sibling_may_have_continued(dba):
    """Two siblings completed in one transaction (a batch) by one agent: either may be the one that
    made the parent ready and continued with it, so a repeat of the other hands nothing over (the
    worker that got the parent runs it)."""
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression
    a, b = take(dba, e.id, 2)
    for t in (a, b):
        assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == "claimed"
    # Both in one transaction, as a batch would: the second continues with the join.
    dba.psql(f"BEGIN; SELECT calc_complete({a.node_id}, {a.epoch}, 'agent-a', 1, NULL, true);"
             f" SELECT calc_complete({b.node_id}, {b.epoch}, 'agent-a', 2, NULL, true); COMMIT;")
    assert dba.psql(f"SELECT count(*) FROM nodes WHERE expression_id = {e.id} AND state = 'running'").strip() == "1"
    for t, v in ((a, 1), (b, 2)):
        r = dba.CompleteNode(node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=v, can_continue=True)
        assert not r.HasField("next")


def test_without_can_continue_or_while_the_parent_waits_nothing_is_continued(dba):
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression  # two leaves, one join
    a, b = take(dba, e.id, 2)
    for t in (a, b):
        assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a") == "claimed"
    # The first completion leaves the join waiting for the other operand: nothing to continue with.
    first = dba.CompleteNode(node_id=a.node_id, epoch=a.epoch, agent="agent-a", value=1, can_continue=True)
    assert not first.HasField("next")
    # The second makes it ready; without can_continue it goes to the dispatcher as before.
    second = dba.CompleteNode(node_id=b.node_id, epoch=b.epoch, agent="agent-a", value=2)
    assert not second.HasField("next")
    (join,) = take(dba, e.id)
    run_node(dba, join)
    assert expr(dba, u.id, e.id).result == 3.0


def test_a_completion_proves_a_claim_that_was_lost(dba):
    """A claim commits without waiting for its WAL flush, so a crash of PostgreSQL may lose it while
    its agent computes. The completion, at the message's epoch, is then applied to the queued node
    (only the message's holder can send it); a second copy of the message finds the node done."""
    u = new_user(dba)
    e = create(dba, u.id, plan_2_plus_2_times_2()).expression
    (t,) = take(dba, e.id)
    assert node_state(dba, t.node_id) == ("queued", t.epoch)  # as if the claim had been lost
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch + 1, agent="agent-a", value=4) == "stale"
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-a", value=4) == "applied"
    assert dba.psql(f"SELECT state, agent, attempts FROM nodes WHERE id = {t.node_id}").strip() == "done|agent-a|1"
    assert expr(dba, u.id, e.id).status == "in_progress"
    assert "started" in [ev.kind for ev in events(dba, u.id)]
    before = snapshot(dba, u.id, e.id)
    assert answer(dba, "ClaimNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b") == "stale"
    assert answer(dba, "CompleteNode", node_id=t.node_id, epoch=t.epoch, agent="agent-b", value=4) == "stale"
    assert snapshot(dba, u.id, e.id) == before
    (root,) = take(dba, e.id)
    run_node(dba, root)
    assert expr(dba, u.id, e.id).result == 6.0


def test_the_outbox_redispatches_only_what_was_never_confirmed(dba):
    """TakeReady reports the previous take's confirmed publishes (no transaction of their own); a
    node whose publish nobody confirmed goes back to ready after unpublished_timeout_ms, a confirmed
    one only after queued_timeout_ms."""
    assert dba.code_of("RequeueStale", heartbeat_timeout_ms=1, queued_timeout_ms=1,
                       unpublished_timeout_ms=-1) == SC.INVALID_ARGUMENT
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(3)).expression
    a, b, c = take(dba, e.id, 3)
    dba.TakeReady(max=1, published=[a])  # a dispatcher's next take: a was confirmed
    dba.MarkQueued(published=[b])       # or told separately
    published = lambda n: dba.psql(f"SELECT published_at IS NOT NULL FROM nodes WHERE id = {n.node_id}").strip()  # noqa: E731
    assert (published(a), published(b), published(c)) == ("t", "t", "f")
    # Marked once: a long poll looks again with the same list after every wake-up, and rewriting
    # the mark each time would make each empty look a write.
    marks = lambda: dba.psql(f"SELECT published_at FROM nodes WHERE id IN ({a.node_id}, {b.node_id}) ORDER BY id")  # noqa: E731
    before = marks()
    dba.TakeReady(max=1, published=[a, b])
    dba.MarkQueued(published=[a, b])
    assert marks() == before

    def requeued_c():
        dba.RequeueStale(heartbeat_timeout_ms=3600_000, queued_timeout_ms=3600_000, unpublished_timeout_ms=1)
        return node_state(dba, c.node_id)[0] == "ready"

    harness.wait_for(requeued_c, 10, "the unconfirmed node to be dispatched again")
    assert [node_state(dba, n.node_id)[0] for n in (a, b)] == ["queued", "queued"]
    (again,) = take(dba, e.id)
    assert again.node_id == c.node_id and again.epoch == c.epoch + 2
    assert published(again) == "f", "a new take is unconfirmed again"


def test_a_take_never_waits_for_a_locked_node(dba):
    """A take marks its predecessor's confirmed publishes, but skips a node another transaction holds
    (a claim in flight): waiting there could close a deadlock with a claim batch, which locks its
    nodes in id order. The node left unmarked is at worst dispatched once more."""
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(2)).expression
    a, b = take(dba, e.id, 2)
    holder = hold_lock(dba, f"SELECT 1 FROM nodes WHERE id = {a.node_id} FOR UPDATE", 30)
    try:
        t0 = time.monotonic()
        dba.TakeReady(max=1, published=[a, b])
        assert time.monotonic() - t0 < 2, "the take waited for the lock"
    finally:
        release(dba, holder)
    published = lambda n: dba.psql(f"SELECT published_at IS NOT NULL FROM nodes WHERE id = {n.node_id}").strip()  # noqa: E731
    assert (published(a), published(b)) == ("f", "t")


def test_mark_queued_never_waits_for_a_locked_node(dba):
    """MarkQueued skips a node another transaction holds, like the take: joined to its list it
    would lock the nodes in the list's order and could close a deadlock with a cancel or a claim
    batch, which lock theirs in id order. A node left queued and unmarked is dispatched again."""
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(4)).expression
    a, b, c, d = sorted(take(dba, e.id, 4), key=lambda t: t.node_id)
    holder = hold_lock(dba, f"SELECT 1 FROM nodes WHERE id IN ({a.node_id}, {c.node_id}) FOR UPDATE", 30)
    try:
        t0 = time.monotonic()
        dba.MarkQueued(published=[b, a], failed=[d, c])
        assert time.monotonic() - t0 < 2, "MarkQueued waited for the lock"
    finally:
        release(dba, holder)
    published = lambda n: dba.psql(f"SELECT published_at IS NOT NULL FROM nodes WHERE id = {n.node_id}").strip()  # noqa: E731
    assert (published(a), published(b)) == ("f", "t")
    assert [node_state(dba, n.node_id)[0] for n in (c, d)] == ["queued", "ready"]


# ---- retries after a lost reply ----------------------------------------------------------------
# dbagent cannot tell a retry from the first call whose reply was lost after its commit: each test
# makes the call, discards its answer, and makes it again with the same request id.


def test_a_retried_create_user_gets_the_same_user_and_makes_no_other(dba):
    first = dba.CreateUser(login="retrier", password_hash="h1", request_id="req-1").user
    users = dba.psql("SELECT count(*) FROM users").strip()
    again = dba.CreateUser(login="retrier", password_hash="h1", request_id="req-1").user
    assert (again.id, again.password_hash, again.created_at_ms) == (first.id, "h1", first.created_at_ms)
    assert dba.psql("SELECT count(*) FROM users").strip() == users
    # Another request for the same login (or one without an id) finds it taken.
    assert dba.code_of("CreateUser", login="retrier", password_hash="h2", request_id="req-2") == SC.ALREADY_EXISTS
    assert dba.code_of("CreateUser", login="retrier", password_hash="h2") == SC.ALREADY_EXISTS
    assert dba.FindUser(login="retrier").user.password_hash == "h1"


def test_a_retried_take_gets_the_same_nodes_and_takes_no_more(dba):
    drain(dba)
    u = new_user(dba)
    e = create(dba, u.id, plan_wide(4)).expression  # four ready leaves
    first = dba.TakeReady(max=2, take_id=77)
    mine = sorted((t.node_id, t.epoch) for t in first.nodes)
    assert len(mine) == 2 and all(t.expression_id == e.id for t in first.nodes)
    state = lambda: dba.psql(f"SELECT id, state, epoch FROM nodes WHERE expression_id = {e.id} ORDER BY id")  # noqa: E731
    before = state()
    again = dba.TakeReady(max=2, take_id=77)
    assert sorted((t.node_id, t.epoch) for t in again.nodes) == mine
    assert state() == before, "the retry changed nodes"
    # A new take (another id) takes the other two; the retry of the first still answers its own.
    other = dba.TakeReady(max=2, take_id=78)
    assert not {t.node_id for t in other.nodes} & {n for n, _ in mine} and len(other.nodes) == 2
    assert sorted((t.node_id, t.epoch) for t in dba.TakeReady(max=2, take_id=77).nodes) == mine
    # Once its nodes are claimed, the id answers nothing of them: a late retry takes as usual.
    for node_id, epoch in mine:
        assert answer(dba, "ClaimNode", node_id=node_id, epoch=epoch, agent="agent-a") == "claimed"
    assert not [t for t in dba.TakeReady(max=2, take_id=77).nodes if t.expression_id == e.id]
