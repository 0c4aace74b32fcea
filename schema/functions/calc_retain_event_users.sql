-- Retention: up to p_limit users after p_after (in id order) whose oldest event is older than
-- p_age_s seconds: the ones calc_retain_events may have something to delete for. One probe of
-- events_by_user_seq per user (numbered events first, then the unnumbered).
CREATE OR REPLACE FUNCTION calc_retain_event_users(p_after bigint, p_age_s integer,
                                                   p_limit integer)
RETURNS SETOF bigint LANGUAGE sql STABLE AS $$
    SELECT u.id FROM users u
     WHERE u.id > p_after
       AND (SELECT e.created_at FROM events e WHERE e.user_id = u.id
             ORDER BY e.seq LIMIT 1) < now() - p_age_s * interval '1 s'
     ORDER BY u.id LIMIT p_limit
$$;
