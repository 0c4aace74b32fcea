-- Fair dispatch without reading every ready node: each node carries its expression's user, and the
-- ready ones are indexed by user and remaining path (replacing the index by remaining path alone),
-- so that a take reads at most its room of nodes from each user with ready work instead of the
-- whole backlog (calc_take_ready).
ALTER TABLE nodes ADD COLUMN user_id bigint;
UPDATE nodes n SET user_id = e.user_id FROM expressions e WHERE e.id = n.expression_id;
ALTER TABLE nodes ALTER COLUMN user_id SET NOT NULL;
DROP INDEX nodes_ready;
CREATE INDEX nodes_ready ON nodes (user_id, tail_ms DESC, id) WHERE state = 'ready';
