-- Tasker's embedded store: the PostgreSQL schema of migrations/0001_schema.sql on SQLite.
--
-- Same tables, columns and invariants; SQLite has no PL/pgSQL, so the operations are Rust code
-- in host/store/src/sqlite/ running inside one write transaction each (one writer at a time).
-- Representation:
--  * instants are INTEGER microseconds since the Unix epoch (UTC), the resolution of
--    PostgreSQL's timestamptz, so both backends return identical instants;
--  * JSON values are TEXT holding JSON; arrays (parent positions, hook patterns) are JSON
--    arrays; booleans are INTEGER 0/1;
--  * the transaction-local `tasker.reason` setting of PostgreSQL is the one row of
--    tasker_ctx, set by each operation before it changes states.
-- State checks and audit rows are row-level triggers (SQLite has no statement triggers).

CREATE TABLE step_state_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
) WITHOUT ROWID;
INSERT INTO step_state_transitions (from_state, to_state) VALUES
    ('pending', 'in_progress'),
    ('pending', 'cancelled'),
    ('pending', 'resolved_manually'),
    ('in_progress', 'complete'),
    ('in_progress', 'waiting_for_retry'),
    ('in_progress', 'error'),
    ('in_progress', 'cancelled'),
    ('waiting_for_retry', 'in_progress'),
    ('waiting_for_retry', 'cancelled'),
    ('waiting_for_retry', 'resolved_manually'),
    ('error', 'pending'),
    ('error', 'cancelled'),
    ('error', 'resolved_manually');

CREATE TABLE task_state_transitions (
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    PRIMARY KEY (from_state, to_state)
) WITHOUT ROWID;
INSERT INTO task_state_transitions (from_state, to_state) VALUES
    ('pending', 'in_progress'),
    ('pending', 'cancelled'),
    ('pending', 'complete'),
    ('pending', 'error'),
    ('in_progress', 'complete'),
    ('in_progress', 'error'),
    ('in_progress', 'cancelled'),
    ('error', 'pending'),
    ('error', 'cancelled');

-- The reason written into transition metadata (PostgreSQL: SET LOCAL tasker.reason).
CREATE TABLE tasker_ctx (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    reason TEXT
);
INSERT INTO tasker_ctx (id, reason) VALUES (1, NULL);

CREATE TABLE namespaces (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (name <> ''),
    created_at  INTEGER NOT NULL
);

CREATE TABLE templates (
    id              INTEGER PRIMARY KEY,
    namespace_id    INTEGER NOT NULL REFERENCES namespaces (id),
    name            TEXT NOT NULL CHECK (name <> ''),
    version         TEXT NOT NULL CHECK (version <> ''),
    template_key    TEXT NOT NULL UNIQUE,
    description     TEXT,
    context_schema  TEXT,
    definition      TEXT NOT NULL,
    step_count      INTEGER NOT NULL CHECK (step_count > 0),
    created_at      INTEGER NOT NULL,
    UNIQUE (namespace_id, name, version)
);

CREATE TABLE template_steps (
    template_id         INTEGER NOT NULL REFERENCES templates (id),
    position            INTEGER NOT NULL,
    name                TEXT NOT NULL,
    handler             TEXT NOT NULL,
    config              TEXT NOT NULL DEFAULT '{}',
    limits              TEXT NOT NULL DEFAULT '{}',
    grants              TEXT NOT NULL DEFAULT '{}',
    parent_positions    TEXT NOT NULL DEFAULT '[]',
    level               INTEGER NOT NULL,
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    retryable           INTEGER NOT NULL,
    backoff_base_ms     INTEGER NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_multiplier  REAL NOT NULL CHECK (backoff_multiplier >= 1),
    backoff_cap_ms      INTEGER NOT NULL CHECK (backoff_cap_ms >= backoff_base_ms),
    backoff_jitter      REAL NOT NULL CHECK (backoff_jitter >= 0 AND backoff_jitter <= 1),
    max_retry_after_ms  INTEGER NOT NULL CHECK (max_retry_after_ms >= 0),
    max_lease_losses    INTEGER NOT NULL CHECK (max_lease_losses >= 1),
    pin                 TEXT NOT NULL DEFAULT 'sticky' CHECK (pin IN ('sticky', 'latest')),
    PRIMARY KEY (template_id, position),
    UNIQUE (template_id, name)
);

CREATE TABLE tasks (
    id                INTEGER PRIMARY KEY,
    namespace_id      INTEGER NOT NULL REFERENCES namespaces (id),
    template_id       INTEGER NOT NULL REFERENCES templates (id),
    state             TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'in_progress', 'complete', 'error', 'cancelled')),
    context           TEXT NOT NULL DEFAULT '{}',
    identity_key      TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    step_count        INTEGER NOT NULL,
    unfinished_steps  INTEGER NOT NULL CHECK (unfinished_steps >= 0),
    error_steps       INTEGER NOT NULL DEFAULT 0 CHECK (error_steps >= 0),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER
);
CREATE UNIQUE INDEX tasks_identity_key ON tasks (namespace_id, identity_key)
    WHERE identity_key IS NOT NULL;
CREATE INDEX tasks_template ON tasks (template_id);

CREATE TABLE steps (
    id                  INTEGER PRIMARY KEY,
    task_id             INTEGER NOT NULL REFERENCES tasks (id),
    position            INTEGER NOT NULL,
    name                TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'in_progress', 'waiting_for_retry', 'complete',
                                         'error', 'cancelled', 'resolved_manually')),
    unfinished_parents  INTEGER NOT NULL CHECK (unfinished_parents >= 0),
    ready_at            INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    retryable           INTEGER NOT NULL,
    backoff_base_ms     INTEGER NOT NULL,
    backoff_multiplier  REAL NOT NULL,
    backoff_cap_ms      INTEGER NOT NULL,
    backoff_jitter      REAL NOT NULL,
    max_retry_after_ms  INTEGER NOT NULL,
    claim_count         INTEGER NOT NULL DEFAULT 0,
    lease_losses        INTEGER NOT NULL DEFAULT 0,
    max_lease_losses    INTEGER NOT NULL,
    worker              TEXT,
    lease_expires_at    INTEGER,
    last_attempted_at   INTEGER,
    last_failure_at     INTEGER,
    backoff_request_ms  INTEGER,
    last_error_kind     TEXT,
    result              TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    UNIQUE (task_id, name),
    CONSTRAINT steps_ready_at CHECK (
        (ready_at IS NOT NULL) = (state IN ('pending', 'waiting_for_retry') AND unfinished_parents = 0)),
    CONSTRAINT steps_lease CHECK ((lease_expires_at IS NOT NULL) = (state = 'in_progress'))
);
-- The claim queue (matches the claim's ORDER BY) and the lease sweeper, as in PostgreSQL.
CREATE INDEX steps_claim_queue ON steps (ready_at, id) WHERE ready_at IS NOT NULL;
CREATE INDEX steps_lease_expiry ON steps (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX steps_task ON steps (task_id, position);

CREATE TABLE edges (
    task_id    INTEGER NOT NULL,
    parent_id  INTEGER NOT NULL REFERENCES steps (id),
    child_id   INTEGER NOT NULL REFERENCES steps (id),
    PRIMARY KEY (parent_id, child_id),
    CHECK (parent_id <> child_id)
) WITHOUT ROWID;
CREATE INDEX edges_child ON edges (child_id);

CREATE TABLE task_transitions (
    task_id      INTEGER NOT NULL,
    sort_key     INTEGER NOT NULL,
    from_state   TEXT NOT NULL,
    to_state     TEXT NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    most_recent  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (task_id, sort_key)
);
CREATE UNIQUE INDEX task_transitions_most_recent ON task_transitions (task_id) WHERE most_recent;

CREATE TABLE step_transitions (
    step_id      INTEGER NOT NULL,
    sort_key     INTEGER NOT NULL,
    from_state   TEXT NOT NULL,
    to_state     TEXT NOT NULL,
    metadata     TEXT NOT NULL DEFAULT '{}',
    most_recent  INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (step_id, sort_key)
);
CREATE UNIQUE INDEX step_transitions_most_recent ON step_transitions (step_id) WHERE most_recent;

CREATE TABLE attempts (
    step_id            INTEGER NOT NULL,
    attempt_no         INTEGER NOT NULL,
    task_id            INTEGER NOT NULL,
    worker             TEXT,
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER NOT NULL,
    outcome            TEXT NOT NULL
                       CHECK (outcome IN ('completed', 'failed', 'lease_lost', 'released', 'cancelled')),
    error_kind         TEXT,
    message            TEXT,
    retryable          INTEGER,
    decision           TEXT CHECK (decision IN ('retry', 'permanent', 'exhausted')),
    next_ready_at      INTEGER,
    fuel               INTEGER,
    peak_memory_bytes  INTEGER,
    wall_us            INTEGER,
    plugin_hash        TEXT,
    decided_by         TEXT,
    decision_detail    TEXT,
    policy_warning     TEXT,
    PRIMARY KEY (step_id, attempt_no)
);

-- Every state change: refuse what the state tables do not allow, then write the audit row.
-- Metadata as in PostgreSQL (json_patch onto '{}' drops the null members).
CREATE TRIGGER steps_transition_allowed BEFORE UPDATE OF state ON steps
WHEN OLD.state <> NEW.state AND NOT EXISTS (
    SELECT 1 FROM step_state_transitions a WHERE a.from_state = OLD.state AND a.to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal step transition');
END;

CREATE TRIGGER steps_audit AFTER UPDATE OF state ON steps
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE step_transitions SET most_recent = 0 WHERE step_id = NEW.id AND most_recent;
    INSERT INTO step_transitions (step_id, sort_key, from_state, to_state, metadata, most_recent, created_at)
    VALUES (NEW.id,
            coalesce((SELECT max(sort_key) FROM step_transitions WHERE step_id = NEW.id), 0) + 1,
            OLD.state, NEW.state,
            json_patch('{}', json_object(
                'reason', nullif((SELECT reason FROM tasker_ctx WHERE id = 1), ''),
                'worker', NEW.worker,
                'attempt', NEW.claim_count,
                'error_kind', CASE WHEN NEW.state IN ('waiting_for_retry', 'error')
                                   THEN NEW.last_error_kind END)),
            1, NEW.updated_at);
END;

CREATE TRIGGER tasks_transition_allowed BEFORE UPDATE OF state ON tasks
WHEN OLD.state <> NEW.state AND NOT EXISTS (
    SELECT 1 FROM task_state_transitions a WHERE a.from_state = OLD.state AND a.to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal task transition');
END;

CREATE TRIGGER tasks_audit AFTER UPDATE OF state ON tasks
WHEN OLD.state <> NEW.state
BEGIN
    UPDATE task_transitions SET most_recent = 0 WHERE task_id = NEW.id AND most_recent;
    INSERT INTO task_transitions (task_id, sort_key, from_state, to_state, metadata, most_recent, created_at)
    VALUES (NEW.id,
            coalesce((SELECT max(sort_key) FROM task_transitions WHERE task_id = NEW.id), 0) + 1,
            OLD.state, NEW.state,
            json_patch('{}', json_object(
                'reason', nullif((SELECT reason FROM tasker_ctx WHERE id = 1), ''))),
            1, NEW.updated_at);
END;
