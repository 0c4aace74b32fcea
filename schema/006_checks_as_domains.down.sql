ALTER TABLE expressions
    ALTER COLUMN status TYPE text,
    ADD CONSTRAINT expressions_status_check
        CHECK (status IN ('new', 'in_progress', 'ok', 'error', 'cancelled'));

ALTER TABLE nodes
    ALTER COLUMN op TYPE text,
    ALTER COLUMN parent_side TYPE smallint,
    ALTER COLUMN pending TYPE smallint,
    ALTER COLUMN state TYPE text,
    ADD CONSTRAINT nodes_op_check CHECK (op IN ('+', '-', '*', '/')),
    ADD CONSTRAINT nodes_parent_side_check CHECK (parent_side IN (0, 1)),
    ADD CONSTRAINT nodes_pending_check CHECK (pending BETWEEN 0 AND 2),
    ADD CONSTRAINT nodes_state_check
        CHECK (state IN ('blocked', 'ready', 'queued', 'running', 'done', 'failed', 'cancelled'));

DROP DOMAIN calc_pending;
DROP DOMAIN calc_operand_side;
DROP DOMAIN calc_expression_status;
DROP DOMAIN calc_node_state;
DROP DOMAIN calc_op;
