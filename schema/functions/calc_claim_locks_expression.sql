-- The lock order, for every transaction that changes an expression or its nodes: the expression
-- row first, then its nodes. Two transactions that keep it cannot deadlock.
--
-- A completion always locks its expression (it counts the node done). A claim locks it only when
-- it may change it, which is what this function says: the first claim of a new expression starts
-- it, and a claim at or past MAX_ATTEMPTS fails it. Any other claim locks its node alone, so the
-- claims of one expression do not queue on its row.
--
-- Who asks:
--  * calc_claim, with the node's attempts before the claim: true means lock the expression
--    before the node.
--  * calc_node_batch, to order its items: within an expression, every item that may lock the
--    expression runs before those that lock a node alone, so a batch never holds a node while it
--    waits for that node's expression. It asks with attempts + 1, a margin for a claim that
--    another transaction commits between the ordering and this claim.
--  * calc_node_batch's one-statement claim, which takes only what is false here.
--
-- NULL (no such node) is neither: such a claim locks nothing.
CREATE OR REPLACE FUNCTION calc_claim_locks_expression(p_status text, p_attempts integer,
                                                       p_max_attempts integer)
RETURNS boolean LANGUAGE sql IMMUTABLE
    AS $$ SELECT p_status = 'new' OR p_attempts >= p_max_attempts $$;
