-- TakeReady: moves up to p_max ready nodes to queued with a new epoch (the dispatcher publishes
-- each at once) and returns them in the order to publish them, each with its operation,
-- operands, delay and attempts so far (a node of no delay is run without a claim).
--
-- Capacity. With p_live_ms > 0, no more are taken than the live agents can start soon: their
-- workers (agents heard from within p_live_ms) plus p_ahead percent of them (rounded up), less
-- the nodes queued or
-- running now. A backlog waits here as ready nodes, ordered as below, instead of in the broker's
-- FIFO; and with every agent gone nothing is taken at all, so a queued-timeout sweep never piles
-- a second message on top of one still in the queue. p_live_ms = 0 takes up to p_max.
--
-- Fairness. Users take turns: a user's k-th ready node (longest remaining path first) gets turn
-- k plus the nodes that user has queued or running already, and the lowest turns go first (ties:
-- longest remaining path). A user with a large backlog keeps the workers busy; a user arriving
-- with one expression gets the next free worker, not a place behind the backlog.
--
-- The outbox: p_published/p_published_epochs are the nodes of the caller's previous take whose
-- messages the broker confirmed; they are marked published here, in the take's own transaction
-- (once: a long poll looks again with the same list after each wake-up).
-- Nodes left unmarked are dispatched again by RequeueStale after its unpublished timeout.
--
-- Retries. p_take_id (not 0) names the take; its nodes carry it. A retry (the reply of the first
-- call was lost, perhaps after its commit) answers with the nodes the first call queued that are
-- still queued, at their epochs, and takes nothing more; when there are none, it takes as usual.
--
-- SKIP LOCKED hands a node to one caller only.
CREATE OR REPLACE FUNCTION calc_take_ready(p_max integer, p_live_ms integer, p_ahead integer,
                                           p_published bigint[], p_published_epochs integer[],
                                           p_take_id bigint)
RETURNS TABLE (id bigint, epoch integer, expression_id bigint, ready_ms bigint, op text,
               lv double precision, rv double precision, delay_ms integer, attempts integer)
LANGUAGE plpgsql AS $$
DECLARE
    room bigint := p_max;
BEGIN
    -- Committed without waiting for the WAL flush: a take lost in a crash leaves its nodes ready
    -- at their old epoch, and the message already published carries the epoch they get again
    -- (one of the two copies claims, the other is stale).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- A take never waits for a row lock, so it cannot join a deadlock (claims lock their nodes in
    -- id order, and an UPDATE joined to the array would lock these in hash order): a node locked
    -- now is being claimed or swept, and leaving its mark off costs at most a redundant dispatch.
    IF cardinality(p_published) > 0 THEN
        UPDATE nodes n SET published_at = now()
          FROM (SELECT m.id FROM nodes m
                  JOIN unnest(p_published, p_published_epochs) AS f(id, epoch)
                    ON m.id = f.id AND m.epoch = f.epoch
                 WHERE m.state = 'queued' AND m.published_at IS NULL
                 ORDER BY m.id FOR UPDATE OF m SKIP LOCKED) AS mine
         WHERE n.id = mine.id;
    END IF;
    IF p_take_id <> 0 THEN
        -- A retry made while the first call still runs (its caller gave up on it) waits here for
        -- it to end, then sees what it queued (each statement here reads anew).
        PERFORM pg_advisory_xact_lock(p_take_id);
        RETURN QUERY
        SELECT n.id, n.epoch, n.expression_id, to_ms(n.ready_at), n.op::text, n.left_value,
               n.right_value, n.delay_ms, n.attempts
          FROM nodes n WHERE n.state = 'queued' AND n.take_id = p_take_id
         ORDER BY n.tail_ms DESC, n.id;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    IF p_live_ms > 0 THEN
        -- Takes count the room one after another. The room and the pick are two statements, each
        -- with its own snapshot: two dispatchers woken by one completion would both count the
        -- same room, and the later pick, seeing the earlier take's nodes queued, would take as
        -- many again.
        PERFORM pg_advisory_xact_lock(1667329123, 1952541541); -- "calc", "take"
        SELECT ceil(coalesce(sum(a.workers), 0) * (100 + p_ahead) / 100.0) INTO room
          FROM agents a WHERE a.last_heartbeat_at > now() - p_live_ms * interval '1 ms';
        -- Each state by itself: its partial index (an IN of both would read the whole table).
        room := least(p_max::bigint,
                      room - (SELECT count(*) FROM nodes n WHERE n.state = 'queued')
                           - (SELECT count(*) FROM nodes n WHERE n.state = 'running'));
        IF room <= 0 THEN
            RETURN;
        END IF;
    END IF;
    -- Only a user's first `room` ready nodes can be picked (the k-th has turn k or more, after
    -- its user's first k - 1), so each user with ready work is read that far in the index by
    -- (user, remaining path) and no further: the cost follows the users and the room, not the
    -- backlog. The users come from a skip scan of that index, one probe each.
    RETURN QUERY
    WITH RECURSIVE
         waiting (user_id) AS (
             (SELECT n.user_id FROM nodes n WHERE n.state = 'ready' ORDER BY n.user_id LIMIT 1)
             UNION ALL
             SELECT (SELECT n.user_id FROM nodes n
                      WHERE n.state = 'ready' AND n.user_id > w.user_id
                      ORDER BY n.user_id LIMIT 1)
               FROM waiting w WHERE w.user_id IS NOT NULL),
         flying AS (SELECT n.user_id FROM nodes n WHERE n.state = 'queued'
                    UNION ALL
                    SELECT n.user_id FROM nodes n WHERE n.state = 'running'),
         busy AS (SELECT f.user_id, count(*) AS n FROM flying f GROUP BY f.user_id),
         cand AS (SELECT c.id, c.tail_ms, coalesce(b.n, 0) + c.k AS turn
                    FROM waiting w
                   CROSS JOIN LATERAL (SELECT n.id, n.tail_ms,
                                              row_number() OVER (ORDER BY n.tail_ms DESC, n.id) AS k
                                         FROM nodes n
                                        WHERE n.state = 'ready' AND n.user_id = w.user_id
                                        ORDER BY n.tail_ms DESC, n.id LIMIT room) c
                    LEFT JOIN busy b ON b.user_id = w.user_id
                   WHERE w.user_id IS NOT NULL),
         pick AS (SELECT c.id, c.turn, c.tail_ms FROM cand c ORDER BY c.turn, c.tail_ms DESC, c.id
                   LIMIT room),
         free AS (SELECT n.id FROM nodes n WHERE n.id IN (SELECT p.id FROM pick p)
                     AND n.state = 'ready' FOR UPDATE SKIP LOCKED),
         t AS (UPDATE nodes n SET state = 'queued', epoch = n.epoch + 1, queued_at = now(),
                      published_at = NULL, take_id = nullif(p_take_id, 0)
                 FROM free f WHERE n.id = f.id
               RETURNING n.id, n.epoch, n.expression_id, n.ready_at, n.op, n.left_value,
                         n.right_value, n.delay_ms, n.attempts)
    SELECT t.id, t.epoch, t.expression_id, to_ms(t.ready_at), t.op::text, t.left_value,
           t.right_value, t.delay_ms, t.attempts
      FROM t JOIN pick p ON p.id = t.id ORDER BY p.turn, p.tail_ms DESC, t.id;
END $$;
