-- The counts of the login limiter, shared by every API (schema/functions/calc_login_limit.sql and
-- calc_login_record.sql). One row per client address ('address <addr>': attempts in a fixed
-- window) and per login with recent failures ('login <login>': their times, at most the limit).
-- A row is of no use after expires_at and is pruned then, so the table holds only the keys seen
-- within one window. UNLOGGED: counts are worth no WAL; a crash of PostgreSQL forgets them.
CREATE UNLOGGED TABLE login_limits (
    key text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    failures timestamptz[] NOT NULL DEFAULT '{}',
    expires_at timestamptz NOT NULL
);
CREATE INDEX login_limits_expires_at ON login_limits (expires_at);
