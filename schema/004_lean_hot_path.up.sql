-- The agents' hot path made lean (figures in bench/dbagent/README.md). The functions of the
-- release changed with it (no NOTIFY inside a transaction, events numbered when read, claims
-- that lock their expression only when they change it); they are in schema/functions/. Here,
-- the tables:
--
--  * Events are numbered when read (calc_number_events), not when written: numbering locked the
--    user's row in every completion, so one user's completions committed one at a time. seq may
--    be NULL until then, and id orders a user's unnumbered events.
--  * The value rules of nodes and expressions are domains, not table CHECK constraints, which
--    PostgreSQL parses from their stored text again in every statement that writes the table
--    (about a tenth of its time in a claim and a completion). Same rules.

-- The foreign key to users goes: checking it locks the user row (FOR KEY SHARE) in every
-- transaction that appends an event, and concurrent lockers of one row share it through a
-- multixact, which one user's completions paid for in every commit. Nothing deletes users.
ALTER TABLE events DROP CONSTRAINT events_user_id_fkey;
ALTER TABLE events ADD COLUMN id bigserial;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ALTER COLUMN seq DROP NOT NULL;
-- id only orders a user's unnumbered events, which (user_id, seq IS NULL) finds: it needs no
-- index of its own (one less index entry per completion).
-- Reading after a number, and finding the unnumbered (seq IS NULL) of a user.
CREATE UNIQUE INDEX events_by_user_seq ON events (user_id, seq);

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
