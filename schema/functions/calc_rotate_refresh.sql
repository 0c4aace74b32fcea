-- Rotates the refresh token whose hash is p_old to its successor p_new. The API derives p_new
-- from the token itself (a keyed hash), so a retry of the same refresh brings the same p_new.
-- o_outcome:
--   rotated   p_new is stored, expiring at p_expires_at but never after the family's end;
--   replayed  p_old was rotated to this same p_new less than p_grace_ms ago and p_new is still
--             the family's live token (a reply was lost): nothing changes, the caller gets p_new
--             again;
--   reused    any other rotated or revoked token: someone holds a copy, the family is revoked;
--   unknown   no such token, or it or its family has expired.
-- o_expires_ms is when the token the caller now holds expires (the cookie's Max-Age).
CREATE OR REPLACE FUNCTION calc_rotate_refresh(p_old text, p_new text, p_expires_at timestamptz,
                                               p_grace_ms integer, OUT o_outcome text,
                                               OUT o_user bigint, OUT o_expires_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t refresh_tokens%ROWTYPE;
    s refresh_tokens%ROWTYPE;
BEGIN
    o_user := 0;
    o_expires_ms := 0;
    SELECT * INTO t FROM refresh_tokens WHERE token_hash = p_old FOR UPDATE;
    IF NOT FOUND OR t.expires_at <= now() OR t.family_expires_at <= now() THEN
        o_outcome := 'unknown';
        RETURN;
    END IF;
    o_user := t.user_id;
    IF NOT t.revoked AND t.replaced_by IS NOT NULL THEN
        IF t.replaced_by = p_new AND t.rotated_at > now() - make_interval(secs => p_grace_ms / 1000.0)
        THEN
            SELECT * INTO s FROM refresh_tokens WHERE token_hash = p_new FOR UPDATE;
            IF FOUND AND NOT s.revoked AND s.replaced_by IS NULL AND s.expires_at > now() THEN
                o_outcome := 'replayed';
                o_expires_ms := to_ms(s.expires_at);
                RETURN;
            END IF;
        END IF;
    END IF;
    IF t.revoked OR t.replaced_by IS NOT NULL THEN
        UPDATE refresh_tokens SET revoked = true WHERE family = t.family AND NOT revoked;
        o_outcome := 'reused';
        RETURN;
    END IF;
    INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, family_expires_at)
    VALUES (p_new, t.user_id, t.family, least(p_expires_at, t.family_expires_at),
            t.family_expires_at);
    UPDATE refresh_tokens SET replaced_by = p_new, rotated_at = now() WHERE token_hash = p_old;
    o_outcome := 'rotated';
    o_expires_ms := to_ms(least(p_expires_at, t.family_expires_at));
END $$;
