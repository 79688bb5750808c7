-- Raise 22023 (InvalidInput) unless every non-null length equals p_n: a batch's array
-- arguments must line up with its step ids.
CREATE OR REPLACE FUNCTION tasker_check_lengths(p_what text, p_n int, VARIADIC p_lens int[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    i int;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_lens, 1), 0) LOOP
        IF p_lens[i] IS NOT NULL AND p_lens[i] <> p_n THEN
            RAISE EXCEPTION '%: array argument % has % elements, expected % (one per step id)',
                p_what, i + 1, p_lens[i], p_n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END
$$;
