-- Several ClaimNode and CompleteNode calls in one transaction (dbagent/batch.c gathers the calls
-- that arrive while others are in PostgreSQL). Each item is exactly calc_claim or calc_complete;
-- what a batch saves is what every transaction pays once: the round trip, the statement and
-- function set-up, the commit and its WAL flush. Measured with pgbench on this schema, 8 pairs
-- per transaction cost half the CPU of one pair per transaction (bench/dbagent/README.md).
--
-- Lock order. Every writer of an expression and its nodes locks the expression row first; a
-- claim that does not change its expression locks the node alone. Items run by expression, and
-- within one expression the completions (which lock the expression) before the claims, so a
-- batch never holds a node while it waits for that node's expression. (A claim and a completion
-- of one node in one batch cannot both apply, whatever their order: the completion of a node
-- follows the commit of its claim.)
--
-- p_claim[i]: a claim (p_value, p_error unused) or a completion (p_error NULL: the value is
-- p_value). Returns one row per item, i being its position in the arrays (from 1), with the
-- OUT values of calc_claim (outcome .. attempt) or of calc_complete (outcome, finished,
-- parent_ready).
CREATE FUNCTION calc_node_batch(p_claim boolean[], p_node bigint[], p_epoch integer[],
                                p_agent text[], p_value double precision[], p_error text[],
                                p_max_attempts integer)
RETURNS TABLE (i integer, outcome integer, op text, lv double precision, rv double precision,
               delay_ms integer, expr_id bigint, attempt integer, finished boolean,
               parent_ready boolean)
LANGUAGE plpgsql
-- The order of the items comes from a join of the arrays with nodes, planned once per session
-- and kept. Planned while nodes was small (a new cluster), it would stay a hash join over a
-- scan of every node as the table grows. Probing the primary key is right at every size.
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    item record;
    c record;
BEGIN
    FOR item IN
        SELECT x.k, x.claim, x.node, x.epoch, x.agent, x.value, x.error
          FROM unnest(p_claim, p_node, p_epoch, p_agent, p_value, p_error)
               WITH ORDINALITY AS x(claim, node, epoch, agent, value, error, k)
          LEFT JOIN nodes n ON n.id = x.node
         ORDER BY n.expression_id, x.claim, x.node, x.k
    LOOP
        i := item.k;
        IF item.claim THEN
            SELECT * INTO c FROM calc_claim(item.node, item.epoch, item.agent, p_max_attempts);
            outcome := c.outcome;
            op := c.op;
            lv := c.lv;
            rv := c.rv;
            delay_ms := c.delay_ms;
            expr_id := c.expr_id;
            attempt := c.attempt;
            finished := NULL;
            parent_ready := NULL;
        ELSE
            SELECT * INTO c
              FROM calc_complete(item.node, item.epoch, item.agent, item.value, item.error);
            outcome := c.outcome;
            op := NULL;
            lv := NULL;
            rv := NULL;
            delay_ms := NULL;
            expr_id := NULL;
            attempt := NULL;
            finished := c.finished;
            parent_ready := c.parent_ready;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
