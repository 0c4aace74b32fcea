-- Numbers the user's committed, unnumbered events, oldest id first, after the user's last
-- number, under the user row's lock. A reader that saw seq N saw it after the commit that gave
-- it, and every later run starts above N: nothing new is ever numbered N or less, and numbers
-- have no gaps. An event's id is taken inside its transaction, so an event whose transaction
-- began after another's commit is numbered after it.
CREATE OR REPLACE FUNCTION calc_number_events(p_user bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    base bigint;
    n bigint;
BEGIN
    PERFORM 1 FROM events WHERE user_id = p_user AND seq IS NULL LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT event_seq INTO base FROM users WHERE id = p_user FOR NO KEY UPDATE;
    -- A new statement, a new snapshot: events numbered by a run we waited for are skipped.
    WITH todo AS (SELECT ctid AS at, row_number() OVER (ORDER BY id) AS k FROM events
                   WHERE user_id = p_user AND seq IS NULL),
         done AS (UPDATE events e SET seq = base + todo.k FROM todo WHERE e.ctid = todo.at
                  RETURNING 1)
    SELECT count(*) INTO n FROM done;
    UPDATE users SET event_seq = base + n WHERE id = p_user;
END $$;
