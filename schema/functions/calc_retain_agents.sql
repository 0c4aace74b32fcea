-- Retention: deletes up to p_limit agents whose last heartbeat is more than p_age_s seconds
-- old and that hold no running node (the monitor hands those back first). An agent that comes
-- back is simply inserted again by its next heartbeat. Returns the agents deleted.
CREATE OR REPLACE FUNCTION calc_retain_agents(p_age_s integer, p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM agents WHERE name IN (
        SELECT a.name FROM agents a
         WHERE a.last_heartbeat_at < now() - p_age_s * interval '1 s'
           AND NOT EXISTS (SELECT 1 FROM nodes nd WHERE nd.state = 'running' AND nd.agent = a.name)
         ORDER BY a.last_heartbeat_at LIMIT p_limit FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
