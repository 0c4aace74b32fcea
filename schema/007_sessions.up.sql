-- Sessions with an end: a refresh-token family ends at a fixed time after its login, whatever
-- its rotations (family_expires_at, copied along the chain); rotated_at dates a rotation, so a
-- token presented again within the replay grace gets its successor back instead of revoking the
-- family. Revoking every session of a user (a password change) goes by user_id.
ALTER TABLE refresh_tokens ADD COLUMN family_expires_at timestamptz;
ALTER TABLE refresh_tokens ADD COLUMN rotated_at timestamptz;
-- A family that was open before this release ends when its current token would have.
UPDATE refresh_tokens SET family_expires_at = expires_at;
ALTER TABLE refresh_tokens ALTER COLUMN family_expires_at SET NOT NULL;
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
