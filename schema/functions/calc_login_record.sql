-- The outcome of a login's password check: a success forgets the login's failures; a failure is
-- kept for p_fail_window_ms, with at most the p_max_failures newest (enough to say it is locked).
CREATE OR REPLACE FUNCTION calc_login_record(p_login text, p_succeeded boolean,
                                             p_max_failures integer, p_fail_window_ms integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    fail_window interval := p_fail_window_ms * interval '1 millisecond';
BEGIN
    IF p_succeeded THEN
        DELETE FROM login_limits WHERE key = 'login ' || p_login;
        RETURN;
    END IF;
    INSERT INTO login_limits AS l (key, window_start, failures, expires_at)
        VALUES ('login ' || p_login, now(), ARRAY[now()], now() + fail_window)
    ON CONFLICT (key) DO UPDATE SET
        failures = array(SELECT f FROM (SELECT f FROM unnest(array_append(l.failures, now())) f
                                         WHERE f > now() - fail_window
                                         ORDER BY f DESC LIMIT p_max_failures) newest
                         ORDER BY f),
        expires_at = now() + fail_window;
END $$;
