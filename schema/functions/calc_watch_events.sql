-- WatchEvents: the events of several users, each after its own position, for the event streams
-- of one API instance. Numbers each user's new events first (calc_number_events), in user id
-- order, so two watchers numbering overlapping users cannot deadlock on the user rows.
-- Returns first one row per user with kind NULL: seq is the user's head (its last numbered
-- event) and expression_id the last seq retention deleted (users.events_purged_seq); then up to
-- p_limit events per user after its position, by user and seq. A position of -1 asks for the
-- head only.
CREATE OR REPLACE FUNCTION calc_watch_events(p_users bigint[], p_after bigint[], p_limit integer)
RETURNS TABLE (user_id bigint, seq bigint, expression_id bigint, kind text, payload text,
               created_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    u bigint;
BEGIN
    FOR u IN SELECT DISTINCT x FROM unnest(p_users) x ORDER BY x LOOP
        PERFORM calc_number_events(u);
    END LOOP;
    RETURN QUERY SELECT us.id, us.event_seq, us.events_purged_seq, NULL::text, NULL::text,
                        NULL::bigint
                   FROM users us WHERE us.id = ANY (p_users);
    RETURN QUERY SELECT p.id, e.seq, coalesce(e.expression_id, 0), e.kind, e.payload::text,
                        to_ms(e.created_at)
                   FROM unnest(p_users, p_after) AS p(id, after)
                  CROSS JOIN LATERAL (SELECT ev.seq, ev.expression_id, ev.kind, ev.payload,
                                             ev.created_at
                                        FROM events ev
                                       WHERE ev.user_id = p.id AND ev.seq > p.after
                                         AND p.after >= 0
                                       ORDER BY ev.seq LIMIT p_limit) e
                  ORDER BY p.id, e.seq;
END $$;
