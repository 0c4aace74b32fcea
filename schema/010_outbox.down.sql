ALTER TABLE nodes DROP COLUMN published_at;
