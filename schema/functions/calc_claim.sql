-- ClaimNode: a queued node at the message's epoch becomes running under the agent; the attempt
-- is counted, and past MAX_ATTEMPTS the node and its expression fail. Locks as
-- calc_claim_locks_expression says.
-- outcome: 0 claimed, 1 stale, 2 cancelled, 3 failed (too many attempts), -1 no such node.
-- event_user: the user whose events this call appended (the expression started or failed), or
-- NULL; the caller wakes that user's event streams after the commit.
CREATE OR REPLACE FUNCTION calc_claim(p_node bigint, p_epoch integer, p_agent text,
                                      p_max_attempts integer,
                                      OUT outcome integer, OUT op text, OUT lv double precision,
                                      OUT rv double precision, OUT delay_ms integer,
                                      OUT expr_id bigint, OUT attempt integer,
                                      OUT event_user bigint)
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
    -- attempts cannot change between this read and a successful update below: that update
    -- needs the node queued at the message's epoch, and any other claim of it at that epoch
    -- makes it running (a later epoch would be a later message).
    IF calc_claim_locks_expression(e.status, e.attempts, p_max_attempts) THEN
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
        event_user := e.user_id;
        RETURN;
    END IF;
    IF e.status = 'new' THEN
        UPDATE expressions SET status = 'in_progress', started_at = now()
         WHERE id = expr_id AND status = 'new';
        PERFORM calc_event(e.user_id, expr_id, 'started', '{}');
        event_user := e.user_id;
    END IF;
    outcome := 0;
    op := n.op;
    lv := n.left_value;
    rv := n.right_value;
    delay_ms := n.delay_ms;
END $$;
