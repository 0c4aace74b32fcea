-- Retention: deletes the expressions that finished (ok, error, cancelled) more than p_age_s
-- seconds ago, oldest first, with their nodes (the foreign key cascades), about p_limit rows in
-- all: expressions are taken while their nodes and themselves fit in p_limit, and always at
-- least one. Rows someone holds are skipped (SKIP LOCKED): retention never waits for the work
-- in flight, and nothing in flight is finished. Returns the expressions deleted.
CREATE OR REPLACE FUNCTION calc_retain_expressions(p_age_s integer, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH candidates AS (
             SELECT id, finished_at, node_count FROM expressions
              WHERE status IN ('ok', 'error', 'cancelled')
                AND finished_at < now() - p_age_s * interval '1 s'
              ORDER BY finished_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
         sized AS (
             SELECT id, sum(node_count + 1) OVER (ORDER BY finished_at, id) - node_count - 1
                        AS before
               FROM candidates),
         gone AS (
             DELETE FROM expressions x USING sized s
              WHERE x.id = s.id AND s.before < p_limit RETURNING 1)
    SELECT count(*) INTO n FROM gone;
    RETURN n;
END $$;
