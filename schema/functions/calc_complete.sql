-- CompleteNode: the result of a running node at that epoch, held by that agent; or of a node
-- still queued at that epoch: its claim was committed without waiting for the WAL flush and lost
-- in a crash (calc_node_batch), and the completion, which only the message's holder can send,
-- proves the lease as well (a second copy of the message then finds the node done: stale). A value fills
-- the parent's operand (and makes it ready when it was the last); the root's value finishes the
-- expression; an error fails the node and its expression.
-- p_error NULL: the node's value is p_value. outcome: 0 applied, 1 stale, -1 no such node.
-- A value sent again by the agent that completed the node at that epoch (the first reply was
-- lost) is answered as applied and changes nothing; see calc_complete_repeat.
-- finished: the expression is now finished (its root was done, or it failed).
-- parent_ready: the parent became ready; the caller wakes the dispatchers after the commit.
-- event_user: the user whose events this call appended (NULL: none); the caller wakes the
-- event streams of that user after the commit.
--
-- Continuation: with p_continue (the completing worker is free now), a parent that this value
-- makes ready is not left for the dispatcher: it is claimed for the same agent in this same
-- transaction (running, a new epoch, one attempt counted, as a claim would), and next_* describe
-- it (next_node NULL otherwise). A chain's next level then costs no dispatch, broker round trip or
-- claim of its own. Fencing is unchanged: the agent completes it at next_epoch, and the monitor
-- takes it back from a silent agent as from any other.
CREATE OR REPLACE FUNCTION calc_complete(p_node bigint, p_epoch integer, p_agent text,
                                         p_value double precision, p_error text,
                                         p_continue boolean,
                                         OUT outcome integer, OUT finished boolean,
                                         OUT parent_ready boolean, OUT event_user bigint,
                                         OUT next_node bigint, OUT next_epoch integer,
                                         OUT next_op text, OUT next_lv double precision,
                                         OUT next_rv double precision, OUT next_delay_ms integer,
                                         OUT next_attempt integer)
LANGUAGE plpgsql AS $$
DECLARE
    eid bigint;
    e record;
    n record;
    par record;
    go_on boolean := coalesce(p_continue, false);
    again boolean;
BEGIN
    finished := false;
    parent_ready := false;
    -- Counting the node done locks the expression too (first, as every writer of both does):
    -- one write of its row instead of a lock and then an update. Undone below if the node
    -- turns out not to be ours.
    UPDATE expressions x SET nodes_done = x.nodes_done + (p_error IS NULL)::integer
      FROM nodes nd
     WHERE nd.id = p_node AND x.id = nd.expression_id AND x.status IN ('new', 'in_progress')
     RETURNING x.id, x.user_id, x.status INTO e;
    IF NOT FOUND THEN
        -- No such node, or its expression is finished: then so is the node (done, failed or
        -- cancelled), and this completion is stale, unless it is the root's own, sent again.
        IF p_error IS NULL AND (calc_complete_repeat(p_node, p_epoch, p_agent, p_value, false)).repeated THEN
            outcome := 0;
            RETURN;
        END IF;
        PERFORM 1 FROM nodes WHERE id = p_node;
        outcome := CASE WHEN FOUND THEN 1 ELSE -1 END;
        RETURN;
    END IF;
    eid := e.id;
    UPDATE nodes SET state = CASE WHEN p_error IS NULL THEN 'done' ELSE 'failed' END,
           result = CASE WHEN p_error IS NULL THEN p_value END, error = p_error,
           finished_at = now(), agent = p_agent, started_at = coalesce(started_at, now()),
           attempts = CASE WHEN state = 'queued' THEN attempts + 1 ELSE attempts END
     WHERE id = p_node AND epoch = p_epoch
       AND ((state = 'running' AND agent = p_agent) OR state = 'queued') IS TRUE
     RETURNING parent_id, parent_side INTO n;
    IF NOT FOUND THEN
        -- Not running at this epoch for this agent: someone else owns the node now, or this is
        -- our own completion again (its reply was lost): applied then, and its continuation, if
        -- any, is handed over again.
        UPDATE expressions SET nodes_done = nodes_done - (p_error IS NULL)::integer
         WHERE id = eid;
        outcome := 1;
        IF p_error IS NULL THEN
            SELECT r.next_node, r.next_epoch, r.next_op, r.next_lv, r.next_rv, r.next_delay_ms,
                   r.next_attempt, r.repeated
              INTO next_node, next_epoch, next_op, next_lv, next_rv, next_delay_ms,
                   next_attempt, again
              FROM calc_complete_repeat(p_node, p_epoch, p_agent, p_value, go_on) r;
            outcome := CASE WHEN again THEN 0 ELSE 1 END;
        END IF;
        RETURN;
    END IF;
    outcome := 0;
    event_user := e.user_id;
    IF e.status = 'new' THEN
        -- Its first claim was the one lost: the expression starts now.
        UPDATE expressions SET status = 'in_progress', started_at = now() WHERE id = eid;
        PERFORM calc_event(e.user_id, eid, 'started', '{}');
    END IF;
    IF p_error IS NOT NULL THEN
        PERFORM calc_fail_expression(eid, p_error);
        finished := true;
        RETURN;
    END IF;
    IF n.parent_id IS NOT NULL THEN
        -- The SET expressions all see the row as it was: "pending = 1 AND state = 'blocked'" is
        -- this value making the parent ready.
        UPDATE nodes SET left_value = CASE WHEN n.parent_side = 0 THEN p_value ELSE left_value END,
               right_value = CASE WHEN n.parent_side = 1 THEN p_value ELSE right_value END,
               pending = pending - 1,
               state = CASE WHEN pending = 1 AND state = 'blocked'
                            THEN CASE WHEN go_on THEN 'running' ELSE 'ready' END
                            ELSE state END,
               ready_at = CASE WHEN pending = 1 THEN now() ELSE ready_at END,
               epoch = CASE WHEN go_on AND pending = 1 AND state = 'blocked' THEN epoch + 1
                            ELSE epoch END,
               agent = CASE WHEN go_on AND pending = 1 AND state = 'blocked' THEN p_agent
                            ELSE agent END,
               started_at = CASE WHEN go_on AND pending = 1 AND state = 'blocked' THEN now()
                                 ELSE started_at END,
               attempts = CASE WHEN go_on AND pending = 1 AND state = 'blocked' THEN attempts + 1
                               ELSE attempts END
         WHERE id = n.parent_id
        RETURNING nodes.state, nodes.epoch, nodes.op, nodes.left_value, nodes.right_value,
                  nodes.delay_ms, nodes.attempts, nodes.pending INTO par;
        parent_ready := par.state = 'ready';
        IF go_on AND par.state = 'running' AND par.pending = 0 THEN
            next_node := n.parent_id;
            next_epoch := par.epoch;
            next_op := par.op;
            next_lv := par.left_value;
            next_rv := par.right_value;
            next_delay_ms := par.delay_ms;
            next_attempt := par.attempts;
        END IF;
    END IF;
    finished := n.parent_id IS NULL;
    IF finished THEN
        UPDATE expressions SET status = 'ok', result = p_value, finished_at = now()
         WHERE id = eid;
    END IF;
    -- calc_event, written out: the hottest insert of all.
    INSERT INTO events (user_id, expression_id, kind, payload)
        VALUES (e.user_id, eid, 'node', jsonb_build_object('node_id', p_node, 'value', p_value));
    IF finished THEN
        PERFORM calc_event(e.user_id, eid, 'finished', jsonb_build_object('result', p_value));
    END IF;
END $$;
