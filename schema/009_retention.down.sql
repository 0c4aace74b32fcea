ALTER TABLE users DROP COLUMN events_purged_seq;
DROP INDEX refresh_tokens_expiry;
DROP INDEX expressions_finished;
