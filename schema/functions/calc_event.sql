-- Appends an event, not yet numbered: calc_number_events numbers a user's events when they are
-- read. A writer takes no lock on the user row, so one user's completions do not queue behind
-- each other's commits. Returns the event's id.
CREATE OR REPLACE FUNCTION calc_event(p_user bigint, p_expr bigint, p_kind text, p_payload jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    eid bigint;
BEGIN
    INSERT INTO events (user_id, expression_id, kind, payload)
        VALUES (p_user, p_expr, p_kind, p_payload) RETURNING id INTO eid;
    RETURN eid;
END $$;
