-- tasker_core::backoff::Backoff::delay_ms: the delay in ms before retrying after failure
-- number p_failure (1-based), seeded by p_seed (the step id). Same float operations in the
-- same order as the Rust; the branch only avoids PostgreSQL's float overflow errors where
-- the Rust result is the cap anyway.
CREATE OR REPLACE FUNCTION tasker_backoff_ms(
    p_base_ms bigint, p_multiplier float8, p_cap_ms bigint, p_jitter float8,
    p_seed bigint, p_failure bigint
) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    v_exp    float8 := greatest(p_failure - 1, 0)::float8;
    v_log    float8;
    v_capped float8;
    v_j      float8 := least(greatest(p_jitter, 0.0::float8), 1.0::float8);
    v_delay  float8;
BEGIN
    IF p_multiplier <= 0 THEN
        RAISE EXCEPTION 'backoff multiplier must be > 0, got %', p_multiplier
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_base_ms <= 0 THEN
        -- 0 * m^e is 0 unless m^e overflows f64 (then NaN, and Rust's f64::min picks the cap).
        IF v_exp * ln(p_multiplier) >= 709.782712893384 THEN
            v_capped := p_cap_ms::float8;
        ELSE
            v_capped := 0;
        END IF;
    ELSE
        v_log := ln(p_base_ms::float8) + v_exp * ln(p_multiplier);
        IF v_log > 700 THEN
            v_capped := p_cap_ms::float8;
        ELSIF v_log < -700 THEN
            v_capped := 0;
        ELSE
            v_capped := least(p_base_ms::float8 * power(p_multiplier, v_exp), p_cap_ms::float8);
        END IF;
    END IF;
    v_delay := floor(v_capped * (1.0::float8 - v_j
                                 + 2.0::float8 * v_j * tasker_jitter_unit(p_seed, p_failure)));
    IF v_delay >= p_cap_ms::float8 THEN
        RETURN p_cap_ms;
    END IF;
    RETURN greatest(v_delay, 0)::bigint;
END
$$;
