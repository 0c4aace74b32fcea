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
