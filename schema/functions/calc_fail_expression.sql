-- Fails a locked, unfinished expression: records the error, cancels its other nodes, appends
-- the event. Returns false when the expression was already finished.
CREATE OR REPLACE FUNCTION calc_fail_expression(p_expr bigint, p_error text)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    uid bigint;
BEGIN
    UPDATE expressions SET status = 'error', error = p_error, finished_at = now(),
           started_at = coalesce(started_at, now())
     WHERE id = p_expr AND status IN ('new', 'in_progress') RETURNING user_id INTO uid;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE nodes SET state = 'cancelled', finished_at = now()
     WHERE expression_id = p_expr AND state IN ('blocked', 'ready', 'queued', 'running');
    PERFORM calc_event(uid, p_expr, 'failed', jsonb_build_object('error', p_error));
    RETURN true;
END $$;
