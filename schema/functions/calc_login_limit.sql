-- One login or register attempt from p_address (and for p_login, when not empty): counts it in
-- the address's fixed window, then says whether it may go on. verdict 0: allowed; 1: the address
-- is over p_budget attempts in its window; 2: p_login has p_max_failures failures within
-- p_fail_window_ms. retry_after_ms: until the verdict would change. Prunes a few expired rows
-- on the way, so the table stays as small as one window's keys.
CREATE OR REPLACE FUNCTION calc_login_limit(p_address text, p_login text, p_budget integer,
                                            p_addr_window_ms integer, p_max_failures integer,
                                            p_fail_window_ms integer,
                                            OUT verdict integer, OUT retry_after_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    addr_window interval := p_addr_window_ms * interval '1 millisecond';
    fail_window interval := p_fail_window_ms * interval '1 millisecond';
    n integer;
    started timestamptz;
    recent timestamptz[];
BEGIN
    verdict := 0;
    retry_after_ms := 0;
    INSERT INTO login_limits AS l (key, window_start, attempts, expires_at)
        VALUES ('address ' || p_address, now(), 1, now() + addr_window)
    ON CONFLICT (key) DO UPDATE SET
        attempts = CASE WHEN l.window_start + addr_window <= now() THEN 1 ELSE l.attempts + 1 END,
        window_start = CASE WHEN l.window_start + addr_window <= now() THEN now()
                            ELSE l.window_start END,
        expires_at = CASE WHEN l.window_start + addr_window <= now() THEN now() + addr_window
                          ELSE l.expires_at END
    RETURNING attempts, window_start INTO n, started;
    -- After the one row this waits for: rows another call holds are skipped, so two calls
    -- never wait for each other.
    DELETE FROM login_limits WHERE key IN
        (SELECT key FROM login_limits WHERE expires_at < now() LIMIT 16 FOR UPDATE SKIP LOCKED);
    IF n > p_budget THEN
        verdict := 1;
        retry_after_ms := to_ms(started + addr_window) - to_ms(now());
        RETURN;
    END IF;
    IF p_login = '' THEN
        RETURN;
    END IF;
    SELECT array(SELECT f FROM unnest(failures) f WHERE f > now() - fail_window ORDER BY f)
        INTO recent FROM login_limits WHERE key = 'login ' || p_login;
    IF coalesce(cardinality(recent), 0) >= p_max_failures THEN
        verdict := 2;
        -- Open again when the oldest failure that keeps it locked leaves the window.
        retry_after_ms := to_ms(recent[cardinality(recent) - p_max_failures + 1] + fail_window)
                          - to_ms(now());
    END IF;
END $$;
