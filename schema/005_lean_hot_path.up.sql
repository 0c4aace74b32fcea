-- A leaner hot path for the agents.
--  * Events are numbered when read instead of when written (calc_number_events): every completion
--    used to lock its user's row to take the next number, so one user's completions committed
--    one at a time.
--  * Appending an event no longer checks a foreign key to users (see below).
--  * ClaimNode and CompleteNode find the node's expression and lock it in one statement.
--  * Their updates of the node reach it by its primary key. Written "state = 'queued'", the test
--    matched the predicate of the partial index nodes_queued (nodes_running for 'running'), and
--    the planner, trusting statistics that lag behind a table whose states churn, scanned every
--    queued node (every running node of the agent) to find one: 350 us a claim with 16,000
--    queued. "(state = 'queued') IS TRUE" means the same and matches no index predicate.

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
    SELECT x.id, x.status, x.user_id INTO e
      FROM nodes nd JOIN expressions x ON x.id = nd.expression_id
     WHERE nd.id = p_node FOR NO KEY UPDATE OF x;
    IF NOT FOUND THEN
        outcome := -1;
        RETURN;
    END IF;
    expr_id := e.id;
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
    SELECT x.id, x.status, x.user_id INTO e
      FROM nodes nd JOIN expressions x ON x.id = nd.expression_id
     WHERE nd.id = p_node FOR NO KEY UPDATE OF x;
    IF NOT FOUND THEN
        outcome := -1;
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
    -- calc_event, written out: the hottest insert of all.
    INSERT INTO events (user_id, expression_id, kind, payload)
        VALUES (e.user_id, eid, 'node_done', jsonb_build_object('node', p_node, 'value', p_value));
    IF finished THEN
        PERFORM calc_event(e.user_id, eid, 'finished', jsonb_build_object('result', p_value));
    END IF;
END $$;

