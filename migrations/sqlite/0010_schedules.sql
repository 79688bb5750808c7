-- Schedules (as PostgreSQL's 0023; tasker_core::schedule, docs/schedules.md). Instants are
-- INTEGER µs, the context JSON text. What a tick fires is decided in Rust
-- (sqlite/schedules.rs), the same rule as PostgreSQL's.
CREATE TABLE schedules (
    name           TEXT PRIMARY KEY CHECK (name <> ''),
    namespace      TEXT NOT NULL,
    template_name  TEXT NOT NULL,
    version        TEXT NOT NULL,
    cron           TEXT NOT NULL,
    tz             TEXT NOT NULL,
    context        TEXT NOT NULL DEFAULT '{}',
    missed         TEXT NOT NULL CHECK (missed IN ('skip', 'run_once')),
    priority       INTEGER CHECK (priority BETWEEN 1 AND 5),
    paused         INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_fire_at   INTEGER,
    last_fired_at  INTEGER,
    source         TEXT NOT NULL CHECK (source IN ('api', 'template')),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
