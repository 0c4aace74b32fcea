ALTER TABLE nodes DROP COLUMN take_id;
ALTER TABLE users DROP COLUMN request_id;
