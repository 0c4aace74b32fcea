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

ALTER TABLE expressions
    ALTER COLUMN status TYPE text,
    ADD CONSTRAINT expressions_status_check
        CHECK (status IN ('new', 'in_progress', 'ok', 'error', 'cancelled'));

ALTER TABLE nodes
    ALTER COLUMN op TYPE text,
    ALTER COLUMN parent_side TYPE smallint,
    ALTER COLUMN pending TYPE smallint,
    ALTER COLUMN state TYPE text,
    ADD CONSTRAINT nodes_op_check CHECK (op IN ('+', '-', '*', '/')),
    ADD CONSTRAINT nodes_parent_side_check CHECK (parent_side IN (0, 1)),
    ADD CONSTRAINT nodes_pending_check CHECK (pending BETWEEN 0 AND 2),
    ADD CONSTRAINT nodes_state_check
        CHECK (state IN ('blocked', 'ready', 'queued', 'running', 'done', 'failed', 'cancelled'));

DROP DOMAIN calc_pending;
DROP DOMAIN calc_operand_side;
DROP DOMAIN calc_expression_status;
DROP DOMAIN calc_node_state;
DROP DOMAIN calc_op;

CREATE OR REPLACE FUNCTION to_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE
    AS $$ SELECT coalesce((extract(epoch FROM t) * 1000)::bigint, 0) $$;

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

DROP FUNCTION calc_complete(bigint, integer, text, double precision, text);

-- p_error NULL: the node's value is p_value. outcome: 0 applied, 1 stale, -1 no such node.
-- finished: the expression is now finished (its root was done, or it failed).
CREATE FUNCTION calc_complete(p_node bigint, p_epoch integer, p_agent text,
                              p_value double precision, p_error text,
                              OUT outcome integer, OUT finished boolean)
LANGUAGE plpgsql AS $$
DECLARE
    eid bigint;
    e record;
    n record;
    parent_state text;
BEGIN
    finished := false;
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
         WHERE id = n.parent_id RETURNING state INTO parent_state;
        IF parent_state = 'ready' THEN
            PERFORM pg_notify('calc_ready', '');
        END IF;
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

-- POST /expression as one round trip: the idempotency check, the per-user limit, the expression
-- and all its nodes, the event and the notification. The plan comes as parallel arrays indexed
-- like the API's plan (0-based node indices; NULL where an operand is a number).
--
-- No lock is taken up front: the unique (user_id, req_uid) index settles concurrent duplicates
-- (the loser waits for the winner's commit and returns its expression), and the user row is
-- locked last, by calc_event, so it is held only for the commit. The unfinished count is read
-- without a lock: parallel requests of one user may pass the limit by their number.
--
-- outcome: 0 created, 1 the existing expression of this req_uid, 2 req_uid names another
-- text, 3 too many unfinished expressions (unfinished holds the count), 4 no such user.
CREATE OR REPLACE FUNCTION calc_create_expression(
    p_user bigint, p_req_uid text, p_text text, p_value double precision, p_depth integer,
    p_critical_path_ms bigint, p_max_unfinished integer,
    p_op text[], p_left_node integer[], p_left_value double precision[],
    p_right_node integer[], p_right_value double precision[], p_parent integer[],
    p_delay integer[], p_tail bigint[],
    OUT outcome integer, OUT unfinished bigint,
    OUT id bigint, OUT user_id bigint, OUT req_uid text, OUT text text, OUT status text,
    OUT result double precision, OUT error text, OUT node_count integer, OUT nodes_done integer,
    OUT depth integer, OUT critical_path_ms bigint, OUT created_ms bigint, OUT started_ms bigint,
    OUT finished_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_op, 1), 0);
    eid bigint;
    ids bigint[];
BEGIN
    unfinished := 0;
    PERFORM 1 FROM users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        outcome := 4;
        RETURN;
    END IF;
    SELECT e.id INTO eid FROM expressions e WHERE e.user_id = p_user AND e.req_uid = p_req_uid;
    IF NOT FOUND AND p_max_unfinished > 0 THEN
        SELECT count(*) INTO unfinished FROM expressions e
         WHERE e.user_id = p_user AND e.status IN ('new', 'in_progress');
        IF unfinished >= p_max_unfinished THEN
            outcome := 3;
            RETURN;
        END IF;
    END IF;
    IF eid IS NULL THEN
        INSERT INTO expressions AS e (user_id, req_uid, text, status, result, node_count, depth,
                                      critical_path_ms, started_at, finished_at)
        VALUES (p_user, p_req_uid, p_text, CASE WHEN n = 0 THEN 'ok' ELSE 'new' END,
                CASE WHEN n = 0 THEN p_value END, n, p_depth, p_critical_path_ms,
                CASE WHEN n = 0 THEN now() END, CASE WHEN n = 0 THEN now() END)
        ON CONFLICT ON CONSTRAINT expressions_user_id_req_uid_key DO NOTHING
        RETURNING e.id INTO eid;
        IF FOUND THEN
            outcome := 0;
        ELSE
            -- A concurrent call with the same req_uid committed first: its expression it is.
            SELECT e.id INTO eid FROM expressions e
             WHERE e.user_id = p_user AND e.req_uid = p_req_uid;
        END IF;
    END IF;
    IF outcome IS NULL THEN
        outcome := CASE WHEN (SELECT e.text FROM expressions e WHERE e.id = eid) = p_text
                        THEN 1 ELSE 2 END;
    ELSIF n > 0 THEN
        SELECT array_agg(nextval('nodes_id_seq') ORDER BY g) INTO ids FROM generate_series(1, n) g;
        INSERT INTO nodes (id, expression_id, op, left_node, left_value, right_node, right_value,
                           parent_id, parent_side, pending, state, delay_ms, tail_ms, ready_at)
        SELECT ids[i], eid, p_op[i], ids[p_left_node[i] + 1], p_left_value[i],
               ids[p_right_node[i] + 1], p_right_value[i],
               CASE WHEN p_parent[i] >= 0 THEN ids[p_parent[i] + 1] END,
               CASE WHEN p_parent[i] < 0 THEN NULL
                    WHEN p_left_node[p_parent[i] + 1] = i - 1 THEN 0 ELSE 1 END,
               (p_left_node[i] IS NOT NULL)::integer + (p_right_node[i] IS NOT NULL)::integer,
               CASE WHEN p_left_node[i] IS NULL AND p_right_node[i] IS NULL
                    THEN 'ready' ELSE 'blocked' END,
               p_delay[i], p_tail[i],
               CASE WHEN p_left_node[i] IS NULL AND p_right_node[i] IS NULL THEN now() END
          FROM generate_series(1, n) i;
        PERFORM calc_event(p_user, eid, 'created', '{}');
        -- Every plan has a node with two numbers: the dispatcher has work.
        PERFORM pg_notify('calc_ready', '');
    ELSE
        PERFORM calc_event(p_user, eid, 'finished', jsonb_build_object('result', p_value));
    END IF;
    SELECT e.id, e.user_id, e.req_uid, e.text, e.status, e.result, e.error, e.node_count,
           e.nodes_done, e.depth, e.critical_path_ms, to_ms(e.created_at), to_ms(e.started_at),
           to_ms(e.finished_at)
      INTO id, user_id, req_uid, text, status, result, error, node_count, nodes_done, depth,
           critical_path_ms, created_ms, started_ms, finished_ms
      FROM expressions e WHERE e.id = eid;
END $$;
