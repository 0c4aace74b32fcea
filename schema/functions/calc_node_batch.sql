-- Several ClaimNode and CompleteNode calls in one transaction (dbagent/batch.c gathers the calls
-- that arrive while others are in PostgreSQL). Each item is exactly calc_claim or calc_complete;
-- what a batch saves is what every transaction pays once: the round trip, the statement and
-- function set-up, the commit and its WAL flush (bench/dbagent/README.md).
--
-- Lock order: items run by expression (in id order), and within one expression every item that
-- may lock the expression first (calc_claim_locks_expression says which, and why). (A claim and a
-- completion of one node in one batch cannot both apply, whatever their order: the completion of
-- a node follows the commit of its claim.)
--
-- p_claim[i]: a claim (p_value, p_error, p_continue unused) or a completion (p_error NULL: the
-- value is p_value; p_continue[i]: calc_complete's). Returns one row per item, i being its
-- position in the arrays (from 1), with the OUT values of calc_claim (outcome .. attempt,
-- event_user) or of calc_complete (outcome, finished, parent_ready, event_user, next_*).
CREATE OR REPLACE FUNCTION calc_node_batch(p_claim boolean[], p_node bigint[],
                                           p_epoch integer[], p_agent text[],
                                           p_value double precision[], p_error text[],
                                           p_continue boolean[], p_max_attempts integer)
RETURNS TABLE (i integer, outcome integer, op text, lv double precision, rv double precision,
               delay_ms integer, expr_id bigint, attempt integer, finished boolean,
               parent_ready boolean, event_user bigint, next_node bigint, next_epoch integer,
               next_op text, next_lv double precision, next_rv double precision,
               next_delay_ms integer, next_attempt integer)
LANGUAGE plpgsql
-- The order of the items comes from a join of the arrays with nodes. Planned for the arrays at
-- hand, it was planned again in every call (a few items cost less than the generic plan's
-- guess of ten); and a plan made while nodes was small (a new cluster) was a hash join over a
-- scan of every node, kept as the table grew. Probing the primary key is right at every size:
-- one plan, made once per session.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    item record;
    cl record; -- calc_claim's answer
    cp record; -- calc_complete's answer
BEGIN
    -- Claims alone commit without waiting for their WAL flush: a claim lost in a crash leaves its
    -- node queued at its epoch, and the completion that would follow it, which is flushed and
    -- flushes every earlier commit with it, cannot be applied without it (docs/dbagent.md).
    IF true = ALL (p_claim) THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    FOR item IN
        SELECT x.k, x.claim, x.node, x.epoch, x.agent, x.value, x.error, x.go_on
          FROM unnest(p_claim, p_node, p_epoch, p_agent, p_value, p_error, p_continue)
               WITH ORDINALITY AS x(claim, node, epoch, agent, value, error, go_on, k)
          LEFT JOIN nodes n ON n.id = x.node
          LEFT JOIN expressions e ON e.id = n.expression_id
         ORDER BY n.expression_id,
                  x.claim AND calc_claim_locks_expression(e.status, n.attempts + 1,
                                                          p_max_attempts) IS NOT TRUE,
                  x.claim, x.node, x.k
    LOOP
        i := item.k;
        finished := NULL;
        parent_ready := NULL;
        event_user := NULL;
        next_node := NULL;
        next_epoch := NULL;
        next_op := NULL;
        next_lv := NULL;
        next_rv := NULL;
        next_delay_ms := NULL;
        next_attempt := NULL;
        IF item.claim THEN
            -- The common claim in one statement: a queued node of a started expression that
            -- calc_claim would not lock the expression for, and would answer the same. Anything
            -- else (or a miss) goes to calc_claim.
            UPDATE nodes nd SET state = 'running', agent = item.agent, started_at = now(),
                   attempts = nd.attempts + 1
              FROM expressions x
             WHERE nd.id = item.node AND nd.epoch = item.epoch AND (nd.state = 'queued') IS TRUE
               AND x.id = nd.expression_id AND (x.status = 'in_progress') IS TRUE
               AND calc_claim_locks_expression(x.status, nd.attempts, p_max_attempts) IS FALSE
            RETURNING 0, nd.op, nd.left_value, nd.right_value, nd.delay_ms, x.id, nd.attempts
                 INTO outcome, op, lv, rv, delay_ms, expr_id, attempt;
            IF NOT FOUND THEN
                -- An assignment, not SELECT .. INTO: a call this way needs no executor of its own.
                cl := calc_claim(item.node, item.epoch, item.agent, p_max_attempts);
                outcome := cl.outcome;
                op := cl.op;
                lv := cl.lv;
                rv := cl.rv;
                delay_ms := cl.delay_ms;
                expr_id := cl.expr_id;
                attempt := cl.attempt;
                event_user := cl.event_user;
            END IF;
        ELSE
            cp := calc_complete(item.node, item.epoch, item.agent, item.value, item.error,
                                item.go_on);
            outcome := cp.outcome;
            op := NULL;
            lv := NULL;
            rv := NULL;
            delay_ms := NULL;
            expr_id := NULL;
            attempt := NULL;
            finished := cp.finished;
            parent_ready := cp.parent_ready;
            event_user := cp.event_user;
            next_node := cp.next_node;
            next_epoch := cp.next_epoch;
            next_op := cp.next_op;
            next_lv := cp.next_lv;
            next_rv := cp.next_rv;
            next_delay_ms := cp.next_delay_ms;
            next_attempt := cp.next_attempt;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
