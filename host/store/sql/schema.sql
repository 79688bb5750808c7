-- The PostgreSQL schema as it stands after every migration in migrations/ (tables, indexes,
-- constraints, the state tables' rows). Readable reference, not run by the store: changes
-- still go in a new migration. tests/sql_definitions.rs checks it matches the migrated
-- database. Functions are in functions/, triggers in triggers.sql; docs/store.md explains
-- the design.

-- Hot-path design (see docs/store.md):
--  * a step row is narrow; the handler, config, limits and grants live once per template
--    in template_steps and are joined at claim time;
--  * steps.unfinished_parents counts parents not yet complete/resolved, and steps.ready_at is
--    set exactly when a step can be claimed (CHECK steps_ready_at), so a claim is an index range scan
--    on (ready_at, id) that never re-evaluates the DAG and never sees the backlog of blocked
--    steps;
--  * steps.claim_count is the fencing token: every claim increments it, and a completion,
--    failure, heartbeat or release must present the current value while the step is
--    in_progress;
--  * every change of steps.state / tasks.state goes through a statement-level trigger that
--    refuses transitions missing from the state tables below and writes the audit rows.

-- State machines (mirror of tasker_core::state; a test checks both agree on every pair).
CREATE TABLE step_state_transitions (
    from_state text NOT NULL,
    to_state   text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
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
    from_state text NOT NULL,
    to_state   text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
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
CREATE TABLE namespaces (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A registered template version is immutable: the same key with another definition is refused.
CREATE TABLE templates (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id    bigint NOT NULL REFERENCES namespaces (id),
    name            text NOT NULL CHECK (name <> ''),
    version         text NOT NULL CHECK (version <> ''),
    template_key    text NOT NULL UNIQUE,
    description     text,
    context_schema  jsonb,
    definition      jsonb NOT NULL,
    step_count      int NOT NULL CHECK (step_count > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Its tasks' priority when the caller gives none (NULL: 3).
    priority        int CHECK (priority BETWEEN 1 AND 5),
    -- {key, limit, strategy} (tasker_core::concurrency), or NULL.
    concurrency     jsonb,
    UNIQUE (namespace_id, name, version)
);

-- One row per step of a template; position = index in the template's step list.
CREATE TABLE template_steps (
    template_id         bigint NOT NULL REFERENCES templates (id),
    position            int NOT NULL,
    name                text NOT NULL,
    handler             text NOT NULL,
    config              jsonb NOT NULL DEFAULT '{}',
    limits              jsonb NOT NULL DEFAULT '{}',
    grants              jsonb NOT NULL DEFAULT '{}',
    parent_positions    int[] NOT NULL DEFAULT '{}',
    level               int NOT NULL,
    max_attempts        int NOT NULL CHECK (max_attempts >= 1),
    retryable           boolean NOT NULL,
    backoff_base_ms     bigint NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_multiplier  float8 NOT NULL CHECK (backoff_multiplier >= 1),
    backoff_cap_ms      bigint NOT NULL CHECK (backoff_cap_ms >= backoff_base_ms),
    backoff_jitter      float8 NOT NULL CHECK (backoff_jitter >= 0 AND backoff_jitter <= 1),
    max_retry_after_ms  bigint NOT NULL CHECK (max_retry_after_ms >= 0),
    max_lease_losses    int NOT NULL CHECK (max_lease_losses >= 1),
    -- sticky: a retry runs the plugin hash of the step's first attempt; latest: resolve again.
    pin                 text NOT NULL DEFAULT 'sticky' CHECK (pin IN ('sticky', 'latest')),
    -- The step's own priority (NULL: its task's).
    priority            int CHECK (priority BETWEEN 1 AND 5),
    PRIMARY KEY (template_id, position),
    UNIQUE (template_id, name)
);

CREATE TABLE tasks (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace_id      bigint NOT NULL REFERENCES namespaces (id),
    template_id       bigint NOT NULL REFERENCES templates (id),
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'in_progress', 'complete', 'error', 'cancelled')),
    context           jsonb NOT NULL DEFAULT '{}',
    -- Caller-provided idempotency key: a second create with it returns the first task.
    identity_key      text,
    -- Request metadata (initiator, source system, reason, tags...).
    metadata          jsonb NOT NULL DEFAULT '{}',
    step_count        int NOT NULL,
    -- Steps not complete / resolved_manually; 0 finalizes the task as complete in O(1).
    unfinished_steps  int NOT NULL CHECK (unfinished_steps >= 0),
    -- Steps in error; only tasks with some are checked for "blocked".
    error_steps       int NOT NULL DEFAULT 0 CHECK (error_steps >= 0),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    -- 1 (lowest) to 5 (highest): tasker_core::priority.
    priority          int NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    -- Its first steps are ready at this instant, not before (NULL: at creation).
    run_at            timestamptz,
    -- Its concurrency key (tasker_concurrency_key) and that key's limit for it.
    concurrency_key   text,
    concurrency_limit int CHECK (concurrency_limit >= 1),
    -- waiting: in its key's line; holding: holds a slot; NULL: neither (no key, finished).
    concurrency_state text CHECK (concurrency_state IN ('waiting', 'holding')),
    CONSTRAINT tasks_concurrency CHECK (concurrency_state IS NULL OR concurrency_key IS NOT NULL)
);
CREATE UNIQUE INDEX tasks_identity_key ON tasks (namespace_id, identity_key)
    WHERE identity_key IS NOT NULL;
CREATE INDEX tasks_template ON tasks (template_id);
-- Listing tasks in some states, by descending id (host/store/src/listing.rs).
CREATE INDEX tasks_state ON tasks (state, id);
-- The pruner: finished tasks per state, oldest first (migration 0018).
CREATE INDEX tasks_retention ON tasks (state, finished_at) WHERE finished_at IS NOT NULL;
-- Each key's line and its slot holders (migration 0022).
CREATE INDEX tasks_concurrency_waiting ON tasks (concurrency_key, id)
    WHERE concurrency_state = 'waiting';
CREATE INDEX tasks_concurrency_holding ON tasks (concurrency_key, id)
    WHERE concurrency_state = 'holding';

-- How many slots each concurrency key's tasks hold; its row lock serializes admissions.
CREATE TABLE concurrency_keys (
    key      text PRIMARY KEY,
    holding  int NOT NULL DEFAULT 0 CHECK (holding >= 0)
);

CREATE TABLE steps (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id             bigint NOT NULL REFERENCES tasks (id),
    position            int NOT NULL,
    name                text NOT NULL,
    state               text NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'in_progress', 'waiting_for_retry', 'complete',
                                         'error', 'cancelled', 'resolved_manually')),
    unfinished_parents  int NOT NULL CHECK (unfinished_parents >= 0),
    -- Set iff the step can be claimed once ready_at <= now (see CHECK steps_ready_at).
    ready_at            timestamptz,
    -- Handler outcomes that count against max_attempts (lease losses and releases do not).
    attempts            int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts        int NOT NULL CHECK (max_attempts >= 1),
    retryable           boolean NOT NULL,
    backoff_base_ms     bigint NOT NULL,
    backoff_multiplier  float8 NOT NULL,
    backoff_cap_ms      bigint NOT NULL,
    backoff_jitter      float8 NOT NULL,
    max_retry_after_ms  bigint NOT NULL,
    -- Fencing token: incremented by every claim; also the attempt number in `attempts`.
    claim_count         int NOT NULL DEFAULT 0,
    lease_losses        int NOT NULL DEFAULT 0,
    max_lease_losses    int NOT NULL,
    -- Worker of the latest claim.
    worker              text,
    lease_expires_at    timestamptz,
    last_attempted_at   timestamptz,
    -- Last time the step left in_progress without completing (failure, lease loss, release).
    last_failure_at     timestamptz,
    -- Delay applied after the last interruption when it was not the computed backoff: a
    -- handler's retry-after (capped), or 0 after a lease loss / release.
    backoff_request_ms  bigint,
    last_error_kind     text,
    result              jsonb,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    -- In effect: the template step's own, else the task's.
    priority            int NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    UNIQUE (task_id, name),
    CONSTRAINT steps_ready_at CHECK (
        (ready_at IS NOT NULL) = (state IN ('pending', 'waiting_for_retry') AND unfinished_parents = 0)),
    CONSTRAINT steps_lease CHECK ((lease_expires_at IS NOT NULL) = (state = 'in_progress'))
);
-- Every claim leaves a dead entry at the head of the claim queue until vacuum removes it, so
-- vacuum this table often (its live size is what matters, not a fraction of it). The spare
-- page room lets counter-only updates (a child still waiting on other parents) stay HOT.
ALTER TABLE steps SET (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
-- The claim queue: holds only claimable steps, each priority's in ready order (claims merge
-- the priorities' heads by tasker_claim_key).
CREATE INDEX steps_claim_queue ON steps (priority, ready_at, id) WHERE ready_at IS NOT NULL;
-- The lease sweeper: holds only in_progress steps.
CREATE INDEX steps_lease_expiry ON steps (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- Parent -> child, both steps of the same task. Immutable after task creation.
CREATE TABLE edges (
    task_id    bigint NOT NULL,
    parent_id  bigint NOT NULL REFERENCES steps (id),
    child_id   bigint NOT NULL REFERENCES steps (id),
    PRIMARY KEY (parent_id, child_id),
    CHECK (parent_id <> child_id)
);
CREATE INDEX edges_child ON edges (child_id);

-- Audit rows. No foreign keys (hot path): rows are written by the audit triggers
-- (triggers.sql) or by the two hot functions, in the same statement as the state change.
-- The initial state (pending) has no row.
CREATE TABLE task_transitions (
    task_id      bigint NOT NULL,
    sort_key     int NOT NULL,
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    most_recent  boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    -- The writing transaction: the event log's order (docs/store.md, "The event log").
    -- Every writer leaves it to the default, the hot functions' own inserts included.
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (task_id, sort_key)
);
CREATE UNIQUE INDEX task_transitions_most_recent ON task_transitions (task_id) WHERE most_recent;
-- The event log across tasks, in its order key.
CREATE INDEX task_transitions_xid ON task_transitions (xid, task_id, sort_key);

CREATE TABLE step_transitions (
    step_id      bigint NOT NULL,
    sort_key     int NOT NULL,
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    most_recent  boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    xid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (step_id, sort_key)
);
CREATE UNIQUE INDEX step_transitions_most_recent ON step_transitions (step_id) WHERE most_recent;
-- The event log across tasks (a task's own steps are found through steps (task_id, name)).
CREATE INDEX step_transitions_xid ON step_transitions (xid, step_id, sort_key);

-- Handlers' custom events, of every task (the outbox keeps them only for hooks): the third
-- source of the event log, written by enqueue_custom_events for accepted attempts. No
-- foreign keys, as the other audit rows.
CREATE TABLE task_events_custom (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    task_id     bigint NOT NULL,
    step_id     bigint NOT NULL,
    step_name   text NOT NULL,
    -- The step's attempt that emitted it.
    attempt     int NOT NULL,
    -- `custom.<name>`, as the event bus names it.
    name        text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL
);
CREATE INDEX task_events_custom_xid ON task_events_custom (xid, id);
CREATE INDEX task_events_custom_task ON task_events_custom (task_id, id);

-- One row per claim that ended (completed, failed, lease lost, released, cancelled).
-- attempt_no is the claim's fencing token.
CREATE TABLE attempts (
    step_id            bigint NOT NULL,
    attempt_no         int NOT NULL,
    task_id            bigint NOT NULL,
    worker             text,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz NOT NULL,
    outcome            text NOT NULL
                       CHECK (outcome IN ('completed', 'failed', 'lease_lost', 'released', 'cancelled')),
    error_kind         text,
    message            text,
    retryable          boolean,
    -- retry | permanent | exhausted (failures and lease losses), null otherwise.
    decision           text CHECK (decision IN ('retry', 'permanent', 'exhausted')),
    next_ready_at      timestamptz,
    fuel               bigint,
    peak_memory_bytes  bigint,
    wall_us            bigint,
    plugin_hash        text,
    -- Who decided a failed attempt's retry: 'builtin' or 'policy:<component>'; what it
    -- answered; and why a policy was not used (it failed and the built-in policy decided).
    decided_by         text,
    decision_detail    text,
    policy_warning     text,
    -- What the handler said: {lines: [{at_us, level, message}], stdout, stderr, dropped};
    -- NULL when it said nothing. Bounded by the sandbox's per-attempt limits.
    logs               jsonb,
    PRIMARY KEY (step_id, attempt_no)
);

-- One row per hook of a template, from the template's definition (`hooks:`), written by a
-- trigger when the template is registered, so register_template needs no change.
CREATE TABLE template_hooks (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    template_id        bigint NOT NULL REFERENCES templates (id),
    position           int NOT NULL,
    component          text NOT NULL,
    patterns           text[] NOT NULL,
    limits             jsonb NOT NULL DEFAULT '{}',
    grants             jsonb NOT NULL DEFAULT '{}',
    max_attempts       int NOT NULL CHECK (max_attempts >= 1),
    backoff_base_ms    bigint NOT NULL,
    backoff_multiplier float8 NOT NULL,
    backoff_cap_ms     bigint NOT NULL,
    backoff_jitter     float8 NOT NULL,
    UNIQUE (template_id, position)
);

-- The outbox: one row per (event, subscribed hook). Rows of one (hook, task) are delivered
-- strictly in id order: only the lowest pending row of a (hook, task), flagged `head`, may
-- be claimed (the head is the per-hook, per-task delivery cursor). Ids are taken while
-- holding the task's row lock (see tasker_hook_lock_tasks), so within a task they follow
-- commit order.
CREATE TABLE hook_outbox (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook_id           bigint NOT NULL,
    task_id           bigint NOT NULL,
    step_id           bigint,
    step_name         text,
    event_name        text NOT NULL,
    attempt           int,
    payload           jsonb NOT NULL DEFAULT '{}',
    event_at          timestamptz NOT NULL,
    -- pending (not yet delivered), delivered, dead (gave up after max_attempts).
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    -- Finished deliveries that failed or succeeded (a lost lease does not count).
    attempts          int NOT NULL DEFAULT 0,
    -- Claim counter: the fencing token of a delivery lease.
    claims            int NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_error        text,
    finished_at       timestamptz,
    -- The lowest pending row of its (hook, task). Set on insert (under the task's row lock)
    -- and moved on by finish_hook_deliveries (under a share lock of the task row), so the
    -- claim reads only heads, however long a (hook, task) backlog grows.
    head              boolean NOT NULL DEFAULT false
);
CREATE INDEX hook_outbox_queue ON hook_outbox (next_attempt_at, id)
    WHERE state = 'pending' AND head;
CREATE INDEX hook_outbox_head ON hook_outbox (hook_id, task_id, id) WHERE state = 'pending';
CREATE INDEX hook_outbox_task ON hook_outbox (task_id, id);
-- Dead letters in id order: listing and redelivering them (migration 0013).
CREATE INDEX hook_outbox_dead ON hook_outbox (id) WHERE state = 'dead';
-- The pruner: delivered rows, oldest first (migration 0018).
CREATE INDEX hook_outbox_delivered ON hook_outbox (finished_at) WHERE state = 'delivered';
ALTER TABLE hook_outbox SET (autovacuum_vacuum_scale_factor = 0.02);

-- API tokens (host/store/src/listing.rs): only the hash of a token's secret is kept. A name is
-- never reused, not even after its token was revoked.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name <> ''),
    -- Hex blake3 of the secret.
    hash         text NOT NULL UNIQUE,
    -- `resource:action` strings or `*`.
    permissions  text[] NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz
);

-- Schedules (migration 0023; tasker_core::schedule, docs/schedules.md): a cron pattern in a
-- time zone that creates a template's task on each of its instants. The decision of what a
-- tick fires is Rust (host/store/src/pg_schedules.rs); the table keeps each schedule's state.
CREATE TABLE schedules (
    name           text PRIMARY KEY CHECK (name <> ''),
    namespace      text NOT NULL,
    template_name  text NOT NULL,
    version        text NOT NULL,
    cron           text NOT NULL,
    tz             text NOT NULL,
    context        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object'),
    missed         text NOT NULL CHECK (missed IN ('skip', 'run_once')),
    priority       int CHECK (priority BETWEEN 1 AND 5),
    paused         boolean NOT NULL DEFAULT false,
    -- NULL: paused, or the pattern never fires again.
    next_fire_at   timestamptz,
    last_fired_at  timestamptz,
    source         text NOT NULL CHECK (source IN ('api', 'template')),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
-- fire_due: the due schedules, earliest first.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
