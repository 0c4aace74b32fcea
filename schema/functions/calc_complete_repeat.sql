-- A completion sent again by its agent after the reply to the first was lost (a broken connection
-- or a deadline after the commit): the node is done at that epoch, by that agent, with that value.
-- repeated says so; the repeat changes nothing. With p_continue, next_* describe the parent that
-- the first completion continued with (running under this agent, started in that completion's
-- transaction), so the agent runs it now instead of leaving it to the monitor; NULL when there is
-- none, or when a sibling finished in the same transaction (a batch), since that sibling's
-- completion may be the one that continued it.
CREATE OR REPLACE FUNCTION calc_complete_repeat(p_node bigint, p_epoch integer, p_agent text,
                                                p_value double precision, p_continue boolean,
                                                OUT repeated boolean, OUT next_node bigint,
                                                OUT next_epoch integer, OUT next_op text,
                                                OUT next_lv double precision,
                                                OUT next_rv double precision,
                                                OUT next_delay_ms integer,
                                                OUT next_attempt integer)
LANGUAGE plpgsql AS $$
DECLARE
    mine record;
BEGIN
    SELECT nd.parent_id, nd.finished_at INTO mine FROM nodes nd
     WHERE nd.id = p_node AND nd.epoch = p_epoch AND nd.agent = p_agent AND nd.state = 'done'
       AND nd.result IS NOT DISTINCT FROM p_value;
    repeated := FOUND;
    IF NOT repeated OR NOT coalesce(p_continue, false) OR mine.parent_id IS NULL THEN
        RETURN;
    END IF;
    -- No row leaves every next_* NULL.
    SELECT p.id, p.epoch, p.op, p.left_value, p.right_value, p.delay_ms, p.attempts
      INTO next_node, next_epoch, next_op, next_lv, next_rv, next_delay_ms, next_attempt
      FROM nodes p
     WHERE p.id = mine.parent_id AND p.state = 'running' AND p.agent = p_agent
       AND p.started_at = mine.finished_at
       AND NOT EXISTS (SELECT 1 FROM nodes s
                        WHERE s.parent_id = mine.parent_id AND s.id <> p_node
                          AND s.finished_at = mine.finished_at);
END $$;
