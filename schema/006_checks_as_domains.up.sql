-- The value checks of the hot tables move from table CHECK constraints to domains. PostgreSQL
-- parses a table's CHECK constraints from their stored text again in every statement that writes
-- the table (it keeps them per query, not per cached plan): about a tenth of its time in the
-- agents' claim and completion. A domain's checks are compiled once per session, and only a
-- column a statement assigns is checked. The rules are the same as before.
CREATE DOMAIN calc_op AS text CHECK (VALUE IN ('+', '-', '*', '/'));
CREATE DOMAIN calc_node_state AS text
    CHECK (VALUE IN ('blocked', 'ready', 'queued', 'running', 'done', 'failed', 'cancelled'));
CREATE DOMAIN calc_expression_status AS text
    CHECK (VALUE IN ('new', 'in_progress', 'ok', 'error', 'cancelled'));
CREATE DOMAIN calc_operand_side AS smallint CHECK (VALUE IN (0, 1));
CREATE DOMAIN calc_pending AS smallint CHECK (VALUE BETWEEN 0 AND 2);

ALTER TABLE nodes
    DROP CONSTRAINT nodes_op_check,
    DROP CONSTRAINT nodes_parent_side_check,
    DROP CONSTRAINT nodes_pending_check,
    DROP CONSTRAINT nodes_state_check,
    ALTER COLUMN op TYPE calc_op,
    ALTER COLUMN parent_side TYPE calc_operand_side,
    ALTER COLUMN pending TYPE calc_pending,
    ALTER COLUMN state TYPE calc_node_state;

ALTER TABLE expressions
    DROP CONSTRAINT expressions_status_check,
    ALTER COLUMN status TYPE calc_expression_status;
