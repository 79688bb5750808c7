-- The earliest ready_at in the claim queue (now or in the future): when a worker with nothing
-- to do should look again, NOTIFY aside. The queue is ordered by priority first, so this is
-- the least of each priority's head (five probes). PL/pgSQL so that its plan is cached per
-- session (an idle worker asks after every empty claim); seq scans off so that plan reads
-- the queue's heads however small the table was when it was made. Steps of a task waiting
-- for a concurrency slot (ready_at 'infinity') are not due at any time.
CREATE OR REPLACE FUNCTION next_ready_at() RETURNS timestamptz
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN (SELECT min(h.ready_at)
            FROM unnest('{1,2,3,4,5}'::int[]) AS lane(p)
            CROSS JOIN LATERAL (SELECT s.ready_at FROM steps s
                                WHERE s.priority = lane.p AND s.ready_at < 'infinity'
                                ORDER BY s.ready_at, s.id LIMIT 1) h);
END
$$;
