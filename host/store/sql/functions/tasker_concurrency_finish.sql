-- BEFORE a task finishes (complete, error, cancelled): it leaves its key's line or gives
-- up its slot. The slot itself is released after the statement's rows are written
-- (tasker_concurrency_release), so that admitting the next task never touches a row the
-- same statement has yet to update.
CREATE OR REPLACE FUNCTION tasker_concurrency_finish() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.concurrency_state := NULL;
    RETURN NEW;
END
$$;
