-- The system of record. Every state change happens inside a dbagent transaction.
-- Functions are in schema/functions/ (to_ms, created here by the first release, too).

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    login         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    -- the last event number handed out for this user; the row lock orders events by commit
    event_seq     bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refresh_tokens (
    token_hash  text PRIMARY KEY, -- hex SHA-256 of the token: the token itself is never stored
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked     boolean NOT NULL DEFAULT false,
    replaced_by text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE operation_durations (
    op         text PRIMARY KEY CHECK (op IN ('+', '-', '*', '/')),
    ms         integer NOT NULL DEFAULT 0 CHECK (ms BETWEEN 0 AND 65535),
    updated_by bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO operation_durations (op) VALUES ('+'), ('-'), ('*'), ('/');

CREATE TABLE expressions (
    id               bigserial PRIMARY KEY,
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    req_uid          text NOT NULL,
    text             text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('new', 'in_progress', 'ok', 'error', 'cancelled')),
    result           double precision,
    error            text NOT NULL DEFAULT '',
    node_count       integer NOT NULL,
    nodes_done       integer NOT NULL DEFAULT 0,
    depth            integer NOT NULL DEFAULT 0,
    critical_path_ms bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (user_id, req_uid)
);
CREATE INDEX expressions_by_user ON expressions (user_id, id DESC);
CREATE INDEX expressions_unfinished ON expressions (user_id) WHERE status IN ('new', 'in_progress');

CREATE TABLE nodes (
    id            bigserial PRIMARY KEY,
    expression_id bigint NOT NULL REFERENCES expressions (id) ON DELETE CASCADE,
    op            text NOT NULL CHECK (op IN ('+', '-', '*', '/')),
    left_node     bigint,
    left_value    double precision,
    right_node    bigint,
    right_value   double precision,
    parent_id     bigint,
    parent_side   smallint CHECK (parent_side IN (0, 1)),
    pending       smallint NOT NULL CHECK (pending BETWEEN 0 AND 2),
    state         text NOT NULL CHECK (state IN ('blocked', 'ready', 'queued', 'running', 'done',
                                                 'failed', 'cancelled')),
    epoch         integer NOT NULL DEFAULT 0,
    attempts      integer NOT NULL DEFAULT 0,
    agent         text,
    delay_ms      integer NOT NULL,
    tail_ms       bigint NOT NULL,
    result        double precision,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    ready_at      timestamptz,
    queued_at     timestamptz,
    started_at    timestamptz,
    finished_at   timestamptz
);
-- The hot paths: the dispatcher takes ready nodes longest-tail first; the monitor looks for
-- long-queued nodes and for the running nodes of silent agents.
CREATE INDEX nodes_ready ON nodes (tail_ms DESC, id) WHERE state = 'ready';
CREATE INDEX nodes_queued ON nodes (queued_at) WHERE state = 'queued';
CREATE INDEX nodes_running ON nodes (agent) WHERE state = 'running';
CREATE INDEX nodes_by_expression ON nodes (expression_id);

CREATE TABLE agents (
    name              text PRIMARY KEY,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    workers           integer NOT NULL DEFAULT 0,
    busy              integer NOT NULL DEFAULT 0,
    nodes             bigint[] NOT NULL DEFAULT '{}'
);

CREATE TABLE events (
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    expression_id bigint,
    kind          text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, seq)
);
