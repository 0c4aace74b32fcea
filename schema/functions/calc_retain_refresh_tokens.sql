-- Retention: deletes up to p_limit refresh tokens that expired more than p_age_s seconds ago.
-- An expired token is refused whether its row is there or not. Returns the tokens deleted.
CREATE OR REPLACE FUNCTION calc_retain_refresh_tokens(p_age_s integer, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM refresh_tokens WHERE token_hash IN (
        SELECT token_hash FROM refresh_tokens
         WHERE expires_at < now() - p_age_s * interval '1 s'
         ORDER BY expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
