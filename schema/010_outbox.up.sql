-- The outbox: when the broker confirmed a queued node's message. The dispatcher reports its
-- confirmed publishes with its next TakeReady (no transaction of their own); a node queued and
-- never confirmed within UNPUBLISHED_TIMEOUT_MS (its dispatcher, dbagent or the reply of the take
-- was lost) is dispatched again by RequeueStale within seconds, not after QUEUED_TIMEOUT_MS.
ALTER TABLE nodes ADD COLUMN published_at timestamptz;
