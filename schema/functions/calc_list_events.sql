-- ListEvents: numbers, then reads.
CREATE OR REPLACE FUNCTION calc_list_events(p_user bigint, p_after bigint, p_limit integer)
RETURNS TABLE (seq bigint, expression_id bigint, kind text, payload text, created_ms bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calc_number_events(p_user);
    RETURN QUERY SELECT e.seq, coalesce(e.expression_id, 0), e.kind, e.payload::text, to_ms(e.created_at)
                   FROM events e WHERE e.user_id = p_user AND e.seq > p_after
                  ORDER BY e.seq LIMIT p_limit;
END $$;
