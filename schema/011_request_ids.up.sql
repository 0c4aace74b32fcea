-- Request ids: a call whose reply was lost after its commit is retried with the same id, and the
-- retry answers what the first call did instead of doing it again.
--   users.request_id: the CreateUser call that made the user (a retry gets the same user, not
--     "login taken"); NULL for users made before this column or by EnsureAdmin.
--   nodes.take_id: the TakeReady call that queued the node (a retry gets the same nodes at the
--     same epochs, instead of new ones while the first ones wait for the outbox's timeout).
-- A refresh token needs no column: its hash, chosen by the caller, is already the request's id.
ALTER TABLE users ADD COLUMN request_id text;
ALTER TABLE nodes ADD COLUMN take_id bigint;
