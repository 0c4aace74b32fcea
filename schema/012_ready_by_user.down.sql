DROP INDEX nodes_ready;
CREATE INDEX nodes_ready ON nodes (tail_ms DESC, id) WHERE state = 'ready';
ALTER TABLE nodes DROP COLUMN user_id;
