-- POST /expression as one round trip: the idempotency check, the per-user limit, the expression
-- and all its nodes, and the event. The plan comes as parallel arrays indexed like the API's plan
-- (0-based node indices; NULL where an operand is a number). calc-dbagent wakes the dispatchers
-- after the commit.
--
-- No lock is taken up front: the unique (user_id, req_uid) index settles concurrent duplicates
-- (the loser waits for the winner's commit and returns its expression). The unfinished count is
-- read without a lock: parallel requests of one user may pass the limit by their number.
--
-- The planner's delays. p_delays, when not NULL, holds the operator delays (+ - * /) the API
-- planned with (from its copy, which another API instance may have made stale): the nodes keep
-- the delays in force when the expression is created, so a plan made with others is refused.
-- The check is in the transaction that inserts, so no change of the delays can slip between
-- them. (NULL: an API that fetched the delays just before; defaulted for an older dbagent.)
--
-- outcome: 0 created, 1 the existing expression of this req_uid, 2 req_uid names another
-- text, 3 too many unfinished expressions (unfinished holds the count), 4 no such user,
-- 5 p_delays are not the delays in force (nothing created).
CREATE OR REPLACE FUNCTION calc_create_expression(
    p_user bigint, p_req_uid text, p_text text, p_value double precision, p_depth integer,
    p_critical_path_ms bigint, p_max_unfinished integer,
    p_op text[], p_left_node integer[], p_left_value double precision[],
    p_right_node integer[], p_right_value double precision[], p_parent integer[],
    p_delay integer[], p_tail bigint[], p_delays integer[] DEFAULT NULL,
    OUT outcome integer, OUT unfinished bigint,
    OUT id bigint, OUT user_id bigint, OUT req_uid text, OUT text text, OUT status text,
    OUT result double precision, OUT error text, OUT node_count integer, OUT nodes_done integer,
    OUT depth integer, OUT critical_path_ms bigint, OUT created_ms bigint, OUT started_ms bigint,
    OUT finished_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_op, 1), 0);
    eid bigint;
    ids bigint[];
BEGIN
    unfinished := 0;
    PERFORM 1 FROM users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        outcome := 4;
        RETURN;
    END IF;
    SELECT e.id INTO eid FROM expressions e WHERE e.user_id = p_user AND e.req_uid = p_req_uid;
    IF NOT FOUND AND p_max_unfinished > 0 THEN
        SELECT count(*) INTO unfinished FROM expressions e
         WHERE e.user_id = p_user AND e.status IN ('new', 'in_progress');
        IF unfinished >= p_max_unfinished THEN
            outcome := 3;
            RETURN;
        END IF;
    END IF;
    IF eid IS NULL AND p_delays IS NOT NULL AND p_delays IS DISTINCT FROM (
            SELECT array_agg(coalesce(d.ms, 0) ORDER BY o.i)
              FROM unnest('{+,-,*,/}'::text[]) WITH ORDINALITY AS o(op, i)
              LEFT JOIN operation_durations d ON d.op = o.op) THEN
        outcome := 5;
        RETURN;
    END IF;
    IF eid IS NULL THEN
        INSERT INTO expressions AS e (user_id, req_uid, text, status, result, node_count, depth,
                                      critical_path_ms, started_at, finished_at)
        VALUES (p_user, p_req_uid, p_text, CASE WHEN n = 0 THEN 'ok' ELSE 'new' END,
                CASE WHEN n = 0 THEN p_value END, n, p_depth, p_critical_path_ms,
                CASE WHEN n = 0 THEN now() END, CASE WHEN n = 0 THEN now() END)
        ON CONFLICT ON CONSTRAINT expressions_user_id_req_uid_key DO NOTHING
        RETURNING e.id INTO eid;
        IF FOUND THEN
            outcome := 0;
        ELSE
            -- A concurrent call with the same req_uid committed first: its expression it is.
            SELECT e.id INTO eid FROM expressions e
             WHERE e.user_id = p_user AND e.req_uid = p_req_uid;
        END IF;
    END IF;
    IF outcome IS NULL THEN
        outcome := CASE WHEN (SELECT e.text FROM expressions e WHERE e.id = eid) = p_text
                        THEN 1 ELSE 2 END;
    ELSIF n > 0 THEN
        SELECT array_agg(nextval('nodes_id_seq') ORDER BY g) INTO ids FROM generate_series(1, n) g;
        INSERT INTO nodes (id, expression_id, user_id, op, left_node, left_value, right_node,
                           right_value, parent_id, parent_side, pending, state, delay_ms, tail_ms,
                           ready_at)
        SELECT ids[i], eid, p_user, p_op[i], ids[p_left_node[i] + 1], p_left_value[i],
               ids[p_right_node[i] + 1], p_right_value[i],
               CASE WHEN p_parent[i] >= 0 THEN ids[p_parent[i] + 1] END,
               CASE WHEN p_parent[i] < 0 THEN NULL
                    WHEN p_left_node[p_parent[i] + 1] = i - 1 THEN 0 ELSE 1 END,
               (p_left_node[i] IS NOT NULL)::integer + (p_right_node[i] IS NOT NULL)::integer,
               CASE WHEN p_left_node[i] IS NULL AND p_right_node[i] IS NULL
                    THEN 'ready' ELSE 'blocked' END,
               p_delay[i], p_tail[i],
               CASE WHEN p_left_node[i] IS NULL AND p_right_node[i] IS NULL THEN now() END
          FROM generate_series(1, n) i;
        PERFORM calc_event(p_user, eid, 'created', '{}');
    ELSE
        PERFORM calc_event(p_user, eid, 'finished', jsonb_build_object('result', p_value));
    END IF;
    SELECT e.id, e.user_id, e.req_uid, e.text, e.status, e.result, e.error, e.node_count,
           e.nodes_done, e.depth, e.critical_path_ms, to_ms(e.created_at), to_ms(e.started_at),
           to_ms(e.finished_at)
      INTO id, user_id, req_uid, text, status, result, error, node_count, nodes_done, depth,
           critical_path_ms, created_ms, started_ms, finished_ms
      FROM expressions e WHERE e.id = eid;
END $$;
