-- Schedules (issue #19; tasker_core::schedule, docs/schedules.md): a cron pattern in a time
-- zone that creates a template's task on each of its instants. The decision of what a tick
-- fires is Rust (tasker_core::schedule::plan, applied by host/store/src/pg_schedules.rs in
-- one transaction with the task it creates); the table only keeps each schedule's state.
-- A task an instant fires has the identity key schedule:<name>:<instant>, so the unique
-- identity index of tasks keeps one task per instant whoever fires it.
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
