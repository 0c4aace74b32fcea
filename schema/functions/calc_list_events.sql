-- ListEvents: numbers, then reads. A reader whose place (p_after) is below the last seq
-- retention deleted (users.events_purged_seq) may have missed events: it is refused with
-- SQLSTATE CL410 (dbagent: OUT_OF_RANGE) naming that seq, to reload and read on after it. The
-- mark is read after the events, so a deletion that commits in between is seen too.
CREATE OR REPLACE FUNCTION calc_list_events(p_user bigint, p_after bigint, p_limit integer)
RETURNS TABLE (seq bigint, expression_id bigint, kind text, payload text, created_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    purged bigint;
BEGIN
    PERFORM calc_number_events(p_user);
    RETURN QUERY SELECT e.seq, coalesce(e.expression_id, 0), e.kind, e.payload::text, to_ms(e.created_at)
                   FROM events e WHERE e.user_id = p_user AND e.seq > p_after
                  ORDER BY e.seq LIMIT p_limit;
    SELECT u.events_purged_seq INTO purged FROM users u WHERE u.id = p_user;
    IF p_after < purged THEN
        RAISE EXCEPTION 'gone: events up to seq % were deleted; reload, then read after seq %',
            purged, purged USING ERRCODE = 'CL410';
    END IF;
END $$;
