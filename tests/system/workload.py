"""Workloads: a chain of dependent operations; many small expressions with a fault injected mid-run,
and the check that every result is right and applied once."""

import time


def chain(levels):
    """An expression of `levels` dependent operations (+ and * alternate, so nothing is regrouped)
    and its value."""
    text, value = "1", 1
    for i in range(levels):
        op = "+" if i % 2 == 0 else "*"
        text = f"({text}{op}2)"
        value = value + 2 if op == "+" else value * 2
    return text, value


def sql(cluster, query):
    out = cluster.servers.psql(query, db=cluster.db)
    return [line.split("|") for line in out.splitlines() if line]


def run_workload(cluster, api, n, tag, fault=None, timeout=120):
    """Submits n expressions of 3 nodes each (2 levels) and waits for all to finish; fault() runs
    once a third of the nodes are done. Returns (seconds, {id: expected value})."""
    t0 = time.monotonic()
    expected = {}
    for i in range(n):
        r = api.post("/expression", json={"expression": f"{i}+{tag}+2*3"})
        assert r.status_code == 200, r.text
        expected[r.json()["expression"]["expression_id"]] = i + tag + 6
    ids_sql = ",".join(map(str, expected))

    def nodes_done():
        return int(sql(cluster, f"SELECT count(*) FROM nodes WHERE expression_id IN ({ids_sql})"
                                f" AND state = 'done'")[0][0])

    if fault:
        cluster.wait_for(lambda: nodes_done() >= n, timeout, "a third of the nodes to finish", 0.1)
        fault()

    def finished():
        return int(sql(cluster, f"SELECT count(*) FROM expressions WHERE id IN ({ids_sql})"
                                f" AND status IN ('ok', 'error', 'cancelled')")[0][0]) == n

    cluster.wait_for(finished, timeout, f"{n} expressions to finish", 0.2)
    return time.monotonic() - t0, expected


def check_applied_once(cluster, expected):
    ids_sql = ",".join(map(str, expected))
    rows = sql(cluster, f"SELECT id, status, result, nodes_done, node_count FROM expressions WHERE id IN ({ids_sql})")
    assert len(rows) == len(expected)
    for eid, status, result, nodes_done, node_count in rows:
        assert status == "ok" and float(result) == expected[int(eid)], (eid, status, result)
        # A result applied twice would count its node twice.
        assert nodes_done == node_count == "3", (eid, nodes_done, node_count)
    bad = sql(cluster, f"SELECT id, state, op, left_value, right_value, result FROM nodes"
                       f" WHERE expression_id IN ({ids_sql}) AND NOT (state = 'done' AND result ="
                       f" CASE op WHEN '+' THEN left_value + right_value WHEN '*' THEN left_value * right_value END)")
    assert not bad, f"nodes not done once with the right value: {bad[:5]}"
    twice = sql(cluster, f"SELECT payload->>'node_id', count(*) FROM events WHERE expression_id IN ({ids_sql})"
                         f" AND kind = 'node' GROUP BY 1 HAVING count(*) > 1")
    assert not twice, f"nodes whose completion was applied twice: {twice[:5]}"
