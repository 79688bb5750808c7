-- AFTER a task holding a slot finished: the slot is free, and the key's line moves on
-- (tasker_concurrency_admit, which counts the freed slot). NEW.updated_at is the finishing
-- call's now.
CREATE OR REPLACE FUNCTION tasker_concurrency_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tasker_concurrency_admit(NEW.concurrency_key, NEW.updated_at, 1);
    RETURN NULL;
END
$$;
