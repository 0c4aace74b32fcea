-- Retention (dbagent/retention.c, the functions calc_retain_*): what lets the job find old rows
-- without reading the tables, and what lets ListEvents tell a reader its place was deleted.
--
--  * Finished expressions by when they finished. The index holds finished ones only, and an
--    expression enters it once, when it finishes (that update already changes status, which the
--    predicate of expressions_unfinished names, so it was never a HOT update); the completions'
--    updates of nodes_done touch neither column and stay HOT.
--  * Refresh tokens by expiry.
--  * users.events_purged_seq: every event of the user numbered up to it may have been deleted.
--    A reader resuming after a lower seq could miss events, so ListEvents refuses it (reload).
--    Events are deleted oldest first, so every event above it is still there.
CREATE INDEX expressions_finished ON expressions (finished_at)
    WHERE status IN ('ok', 'error', 'cancelled');
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
ALTER TABLE users ADD COLUMN events_purged_seq bigint NOT NULL DEFAULT 0;
