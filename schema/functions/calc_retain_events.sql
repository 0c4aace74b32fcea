-- Retention: deletes the user's oldest events, in seq order, up to p_limit of them, stopping at
-- the first that must stay: one younger than p_age_s seconds, or one of an expression still
-- kept that is unfinished or finished less than p_age_s seconds ago. So what is deleted is
-- always a prefix of the user's numbered events, and users.events_purged_seq, the last seq
-- deleted, is all a reader needs to know: below it, events may be gone (ListEvents says so);
-- above it, none is. The user's unnumbered events are numbered first (calc_number_events, under
-- the user row's lock, as a ListEvents would), so none is deleted without a number. Numbering
-- goes on from users.event_seq, which deleting does not change: no number is given twice.
-- Returns the events deleted.
CREATE OR REPLACE FUNCTION calc_retain_events(p_user bigint, p_age_s integer, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - p_age_s * interval '1 s';
    upto bigint;
    n integer;
BEGIN
    PERFORM calc_number_events(p_user);
    SELECT max(c.seq) INTO upto FROM (
        SELECT o.seq, bool_and(o.deletable) OVER (ORDER BY o.seq) AS all_so_far FROM (
            SELECT e.seq, e.created_at < cutoff AND NOT EXISTS (
                       SELECT 1 FROM expressions x
                        WHERE x.id = e.expression_id
                          AND NOT (x.status IN ('ok', 'error', 'cancelled')
                                   AND coalesce(x.finished_at < cutoff, false))) AS deletable
              FROM events e WHERE e.user_id = p_user AND e.seq IS NOT NULL
             ORDER BY e.seq LIMIT p_limit) o) c
     WHERE c.all_so_far;
    IF upto IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM events WHERE user_id = p_user AND seq <= upto;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE users SET events_purged_seq = greatest(events_purged_seq, upto) WHERE id = p_user;
    RETURN n;
END $$;
