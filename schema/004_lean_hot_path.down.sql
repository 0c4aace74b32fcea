-- Number what is still unnumbered, so seq can be the key again (no event comes in meanwhile):
-- each user's, oldest id first, after the user's last number, as calc_number_events would. Plain
-- SQL: the functions are gone before any down migration runs.
LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;
WITH todo AS (SELECT e.ctid AS at, e.user_id,
                     u.event_seq + row_number() OVER (PARTITION BY e.user_id ORDER BY e.id) AS seq
                FROM events e JOIN users u ON u.id = e.user_id
               WHERE e.seq IS NULL),
     numbered AS (UPDATE events e SET seq = todo.seq FROM todo WHERE e.ctid = todo.at
                  RETURNING e.user_id, e.seq)
UPDATE users u SET event_seq = last.seq
  FROM (SELECT user_id, max(seq) AS seq FROM numbered GROUP BY user_id) last
 WHERE u.id = last.user_id;
DROP INDEX events_by_user_seq;
ALTER TABLE events DROP COLUMN id;
ALTER TABLE events ALTER COLUMN seq SET NOT NULL;
ALTER TABLE events ADD PRIMARY KEY (user_id, seq);
ALTER TABLE events ADD CONSTRAINT events_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
    ON DELETE CASCADE;

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
