-- Number what is still unnumbered, so seq can be the key again (no event comes in meanwhile).
LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;
SELECT calc_number_events(u.id) FROM users u
 WHERE EXISTS (SELECT 1 FROM events e WHERE e.user_id = u.id AND e.seq IS NULL);
DROP FUNCTION calc_list_events(bigint, bigint, integer);
DROP FUNCTION calc_number_events(bigint);
DROP INDEX events_by_user_seq;
ALTER TABLE events DROP COLUMN id;
ALTER TABLE events ALTER COLUMN seq SET NOT NULL;
ALTER TABLE events ADD PRIMARY KEY (user_id, seq);
ALTER TABLE events ADD CONSTRAINT events_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
    ON DELETE CASCADE;

-- Appends an event with the user's next sequence number. The user row stays locked until
-- commit, so a later number is always committed later: a reader that saw seq N never finds a
-- new event <= N afterwards. Always the last lock a transaction takes.
CREATE OR REPLACE FUNCTION calc_event(p_user bigint, p_expr bigint, p_kind text, p_payload jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    UPDATE users SET event_seq = event_seq + 1 WHERE id = p_user RETURNING event_seq INTO s;
    INSERT INTO events (user_id, seq, expression_id, kind, payload)
        VALUES (p_user, s, p_expr, p_kind, p_payload);
    RETURN s;
END $$;


-- outcome: 0 claimed, 1 stale, 2 cancelled, 3 failed (too many attempts), -1 no such node.
CREATE OR REPLACE FUNCTION calc_claim(p_node bigint, p_epoch integer, p_agent text, p_max_attempts integer,
                           OUT outcome integer, OUT op text, OUT lv double precision,
                           OUT rv double precision, OUT delay_ms integer, OUT expr_id bigint,
                           OUT attempt integer)
LANGUAGE plpgsql AS $$
DECLARE
    e record;
    n record;
BEGIN
    SELECT expression_id INTO expr_id FROM nodes WHERE id = p_node;
    IF NOT FOUND THEN
        outcome := -1;
        RETURN;
    END IF;
    SELECT status, user_id INTO e FROM expressions WHERE id = expr_id FOR NO KEY UPDATE;
    UPDATE nodes SET state = 'running', agent = p_agent, started_at = now(),
           attempts = attempts + 1
     WHERE id = p_node AND epoch = p_epoch AND state = 'queued'
     RETURNING nodes.op, left_value, right_value, nodes.delay_ms, attempts INTO n;
    IF NOT FOUND THEN
        SELECT state INTO n FROM nodes WHERE id = p_node;
        outcome := CASE WHEN n.state = 'cancelled' OR e.status IN ('cancelled', 'error') THEN 2
                        ELSE 1 END;
        RETURN;
    END IF;
    attempt := n.attempts;
    IF n.attempts > p_max_attempts THEN
        -- Claimed again and again but never completed: stop the loop here.
        UPDATE nodes SET state = 'failed', finished_at = now(),
               error = format('node %s gave up after %s attempts', p_node, p_max_attempts)
         WHERE id = p_node;
        PERFORM calc_fail_expression(expr_id,
                                     format('node %s gave up after %s attempts', p_node,
                                            p_max_attempts));
        outcome := 3;
        RETURN;
    END IF;
    IF e.status = 'new' THEN
        UPDATE expressions SET status = 'in_progress', started_at = now() WHERE id = expr_id;
        PERFORM calc_event(e.user_id, expr_id, 'started', '{}');
    END IF;
    outcome := 0;
    op := n.op;
    lv := n.left_value;
    rv := n.right_value;
    delay_ms := n.delay_ms;
END $$;


-- p_error NULL: the node's value is p_value. outcome: 0 applied, 1 stale, -1 no such node.
-- finished: the expression is now finished (its root was done, or it failed).
-- parent_ready: the parent became ready; the caller wakes the dispatchers after the commit.
CREATE OR REPLACE FUNCTION calc_complete(p_node bigint, p_epoch integer, p_agent text,
                              p_value double precision, p_error text,
                              OUT outcome integer, OUT finished boolean, OUT parent_ready boolean)
LANGUAGE plpgsql AS $$
DECLARE
    eid bigint;
    e record;
    n record;
BEGIN
    finished := false;
    parent_ready := false;
    SELECT expression_id INTO eid FROM nodes WHERE id = p_node;
    IF NOT FOUND THEN
        outcome := -1;
        RETURN;
    END IF;
    SELECT status, user_id INTO e FROM expressions WHERE id = eid FOR NO KEY UPDATE;
    UPDATE nodes SET state = CASE WHEN p_error IS NULL THEN 'done' ELSE 'failed' END,
           result = CASE WHEN p_error IS NULL THEN p_value END, error = p_error,
           finished_at = now()
     WHERE id = p_node AND epoch = p_epoch AND agent = p_agent AND state = 'running'
     RETURNING parent_id, parent_side INTO n;
    IF NOT FOUND THEN
        -- Not running at this epoch for this agent: someone else owns the node now.
        outcome := 1;
        RETURN;
    END IF;
    outcome := 0;
    IF p_error IS NOT NULL THEN
        PERFORM calc_fail_expression(eid, p_error);
        finished := true;
        RETURN;
    END IF;
    IF n.parent_id IS NOT NULL THEN
        UPDATE nodes SET left_value = CASE WHEN n.parent_side = 0 THEN p_value ELSE left_value END,
               right_value = CASE WHEN n.parent_side = 1 THEN p_value ELSE right_value END,
               pending = pending - 1,
               state = CASE WHEN pending = 1 AND state = 'blocked' THEN 'ready' ELSE state END,
               ready_at = CASE WHEN pending = 1 THEN now() ELSE ready_at END
         WHERE id = n.parent_id RETURNING state = 'ready' INTO parent_ready;
    END IF;
    finished := n.parent_id IS NULL;
    UPDATE expressions SET nodes_done = nodes_done + 1,
           status = CASE WHEN finished THEN 'ok' ELSE status END,
           result = CASE WHEN finished THEN p_value ELSE result END,
           finished_at = CASE WHEN finished THEN now() ELSE finished_at END
     WHERE id = eid AND status IN ('new', 'in_progress');
    PERFORM calc_event(e.user_id, eid, 'node_done',
                       jsonb_build_object('node', p_node, 'value', p_value));
    IF finished THEN
        PERFORM calc_event(e.user_id, eid, 'finished', jsonb_build_object('result', p_value));
    END IF;
END $$;

