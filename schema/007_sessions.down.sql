DROP INDEX refresh_tokens_user;
ALTER TABLE refresh_tokens DROP COLUMN rotated_at;
ALTER TABLE refresh_tokens DROP COLUMN family_expires_at;
