-- The earliest ready_at in the claim queue (now or in the future): when a worker with nothing
-- to do should look again, NOTIFY aside. PL/pgSQL so that its plan is cached per session (an
-- idle worker asks after every empty claim); seq scans off so that plan reads the queue's
-- head however small the table was when it was made.
CREATE OR REPLACE FUNCTION next_ready_at() RETURNS timestamptz
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN (SELECT s.ready_at FROM steps s WHERE s.ready_at IS NOT NULL
            ORDER BY s.ready_at, s.id LIMIT 1);
END
$$;
