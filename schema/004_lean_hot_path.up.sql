-- The agents' hot path made lean: what each part fixed, measured with bench-dbagent,
-- pg_stat_activity and pg_stat_statements (figures in bench/dbagent/README.md).
--
--  * No NOTIFY inside the transactions that make nodes ready. PostgreSQL commits notifying
--    transactions one at a time under one database-wide lock, which had become the limit of the
--    whole cluster. calc_complete says whether the parent became ready, and calc-dbagent wakes
--    its own long polls and tells the other dbagents with one coalesced NOTIFY (dbagent/ready.c).
--  * Events are numbered when read (calc_number_events), not when written: numbering locked the
--    user's row in every completion, so one user's completions committed one at a time.
--  * The value rules of nodes and expressions are domains, not table CHECK constraints, which
--    PostgreSQL parses from their stored text again in every statement that writes the table
--    (about a tenth of its time in a claim and a completion). Same rules.
--  * to_ms is STABLE, as extract() from a timestamptz is: declared IMMUTABLE it was never
--    inlined, and every call parsed and planned its body.
--  * Node updates reach the node by primary key. Written "state = 'queued'", the test matched
--    the predicate of the partial index nodes_queued (nodes_running for 'running'), and the
--    planner, trusting statistics that lag behind a table whose states churn, scanned every
--    queued node to find one. "(state = 'queued') IS TRUE" means the same and matches no index
--    predicate.
--  * A claim locks its expression only when it changes it; a completion writes the expression
--    row once.

-- The foreign key to users goes: checking it locks the user row (FOR KEY SHARE) in every
-- transaction that appends an event, and concurrent lockers of one row share it through a
-- multixact, which one user's completions paid for in every commit. Nothing deletes users.
ALTER TABLE events DROP CONSTRAINT events_user_id_fkey;
ALTER TABLE events ADD COLUMN id bigserial;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ALTER COLUMN seq DROP NOT NULL;
-- id only orders a user's unnumbered events, which (user_id, seq IS NULL) finds: it needs no
-- index of its own (one less index entry per completion).
-- Reading after a number, and finding the unnumbered (seq IS NULL) of a user.
CREATE UNIQUE INDEX events_by_user_seq ON events (user_id, seq);

CREATE DOMAIN calc_op AS text CHECK (VALUE IN ('+', '-', '*', '/'));
CREATE DOMAIN calc_node_state AS text
    CHECK (VALUE IN ('blocked', 'ready', 'queued', 'running', 'done', 'failed', 'cancelled'));
CREATE DOMAIN calc_expression_status AS text
    CHECK (VALUE IN ('new', 'in_progress', 'ok', 'error', 'cancelled'));
CREATE DOMAIN calc_operand_side AS smallint CHECK (VALUE IN (0, 1));
CREATE DOMAIN calc_pending AS smallint CHECK (VALUE BETWEEN 0 AND 2);

ALTER TABLE nodes
    DROP CONSTRAINT nodes_op_check,
    DROP CONSTRAINT nodes_parent_side_check,
    DROP CONSTRAINT nodes_pending_check,
    DROP CONSTRAINT nodes_state_check,
    ALTER COLUMN op TYPE calc_op,
    ALTER COLUMN parent_side TYPE calc_operand_side,
    ALTER COLUMN pending TYPE calc_pending,
    ALTER COLUMN state TYPE calc_node_state;

ALTER TABLE expressions
    DROP CONSTRAINT expressions_status_check,
    ALTER COLUMN status TYPE calc_expression_status;

CREATE OR REPLACE FUNCTION to_ms(t timestamptz) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT coalesce((extract(epoch FROM t) * 1000)::bigint, 0) $$;

-- Appends an event, not yet numbered: calc_number_events numbers a user's events when they are
-- read. A writer takes no lock on the user row, so one user's completions no longer queue
-- behind each other's commits. Returns the event's id.
CREATE OR REPLACE FUNCTION calc_event(p_user bigint, p_expr bigint, p_kind text, p_payload jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    eid bigint;
BEGIN
    INSERT INTO events (user_id, expression_id, kind, payload)
        VALUES (p_user, p_expr, p_kind, p_payload) RETURNING id INTO eid;
    RETURN eid;
END $$;

-- Numbers the user's committed, unnumbered events, oldest id first, after the user's last
-- number, under the user row's lock. A reader that saw seq N saw it after the commit that gave
-- it, and every later run starts above N: nothing new is ever numbered N or less, and numbers
-- have no gaps. An event's id is taken inside its transaction, so an event whose transaction
-- began after another's commit is numbered after it.
CREATE FUNCTION calc_number_events(p_user bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    n bigint;
BEGIN
    PERFORM 1 FROM events WHERE user_id = p_user AND seq IS NULL LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT event_seq INTO base FROM users WHERE id = p_user FOR NO KEY UPDATE;
    -- A new statement, a new snapshot: events numbered by a run we waited for are skipped.
    WITH todo AS (SELECT ctid AS at, row_number() OVER (ORDER BY id) AS k FROM events
                   WHERE user_id = p_user AND seq IS NULL),
         done AS (UPDATE events e SET seq = base + todo.k FROM todo WHERE e.ctid = todo.at
                  RETURNING 1)
    SELECT count(*) INTO n FROM done;
    UPDATE users SET event_seq = base + n WHERE id = p_user;
END $$;

-- ListEvents: numbers, then reads.
CREATE FUNCTION calc_list_events(p_user bigint, p_after bigint, p_limit integer)
RETURNS TABLE (seq bigint, expression_id bigint, kind text, payload text, created_ms bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calc_number_events(p_user);
    RETURN QUERY SELECT e.seq, coalesce(e.expression_id, 0), e.kind, e.payload::text, to_ms(e.created_at)
                   FROM events e WHERE e.user_id = p_user AND e.seq > p_after
                  ORDER BY e.seq LIMIT p_limit;
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
    SELECT x.id, x.status, x.user_id, nd.attempts INTO e
      FROM nodes nd JOIN expressions x ON x.id = nd.expression_id
     WHERE nd.id = p_node;
    IF NOT FOUND THEN
        outcome := -1;
        RETURN;
    END IF;
    expr_id := e.id;
    -- Only the first claim of an expression (it starts it) and a last allowed attempt (it may
    -- fail it) change the expression: those lock it, before the node, as every writer of both
    -- does. Other claims lock the node alone, so the claims of one expression do not queue on it.
    -- attempts cannot change between this read and a successful update below: that update
    -- needs the node queued at the message's epoch, and any other claim of it at that epoch
    -- makes it running (a later epoch would be a later message).
    IF e.status = 'new' OR e.attempts >= p_max_attempts THEN
        SELECT x.id, x.status, x.user_id INTO e FROM expressions x WHERE x.id = expr_id
           FOR NO KEY UPDATE;
    END IF;
    UPDATE nodes SET state = 'running', agent = p_agent, started_at = now(),
           attempts = attempts + 1
     WHERE id = p_node AND epoch = p_epoch AND (state = 'queued') IS TRUE
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
        UPDATE expressions SET status = 'in_progress', started_at = now()
         WHERE id = expr_id AND status = 'new';
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
-- parent_ready: the parent became ready; the caller wakes the dispatchers after the commit.
CREATE FUNCTION calc_complete(p_node bigint, p_epoch integer, p_agent text,
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
    -- Counting the node done locks the expression too (first, as every writer of both does):
    -- one write of its row instead of a lock and then an update. Undone below if the node
    -- turns out not to be ours.
    UPDATE expressions x SET nodes_done = x.nodes_done + (p_error IS NULL)::integer
      FROM nodes nd
     WHERE nd.id = p_node AND x.id = nd.expression_id AND x.status IN ('new', 'in_progress')
     RETURNING x.id, x.user_id INTO e;
    IF NOT FOUND THEN
        -- No such node, or its expression is finished: then so is the node (done, failed or
        -- cancelled), and this completion is stale.
        PERFORM 1 FROM nodes WHERE id = p_node;
        outcome := CASE WHEN FOUND THEN 1 ELSE -1 END;
        RETURN;
    END IF;
    eid := e.id;
    UPDATE nodes SET state = CASE WHEN p_error IS NULL THEN 'done' ELSE 'failed' END,
           result = CASE WHEN p_error IS NULL THEN p_value END, error = p_error,
           finished_at = now()
     WHERE id = p_node AND epoch = p_epoch AND agent = p_agent AND (state = 'running') IS TRUE
     RETURNING parent_id, parent_side INTO n;
    IF NOT FOUND THEN
        -- Not running at this epoch for this agent: someone else owns the node now.
        UPDATE expressions SET nodes_done = nodes_done - (p_error IS NULL)::integer
         WHERE id = eid;
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
    IF finished THEN
        UPDATE expressions SET status = 'ok', result = p_value, finished_at = now()
         WHERE id = eid;
    END IF;
    -- calc_event, written out: the hottest insert of all.
    INSERT INTO events (user_id, expression_id, kind, payload)
        VALUES (e.user_id, eid, 'node_done', jsonb_build_object('node', p_node, 'value', p_value));
    IF finished THEN
        PERFORM calc_event(e.user_id, eid, 'finished', jsonb_build_object('result', p_value));
    END IF;
END $$;

-- As in 003, without the NOTIFY: calc-dbagent wakes the dispatchers after the commit.
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
