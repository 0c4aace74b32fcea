-- Changes a user's password and ends every session of the user: all their refresh-token
-- families are revoked and one new family (p_token, for the caller) starts. p_old_hash is the
-- hash the caller checked the old password against: when another change came first, nothing
-- happens and the result is false.
CREATE OR REPLACE FUNCTION calc_change_password(p_user bigint, p_old_hash text, p_new_hash text,
                                                p_token text, p_expires_at timestamptz,
                                                p_family_expires_at timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET password_hash = p_new_hash WHERE id = p_user AND password_hash = p_old_hash;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE refresh_tokens SET revoked = true WHERE user_id = p_user AND NOT revoked;
    INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, family_expires_at)
    VALUES (p_token, p_user, p_token, p_expires_at, p_family_expires_at);
    RETURN true;
END $$;
