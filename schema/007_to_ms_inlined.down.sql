CREATE OR REPLACE FUNCTION to_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE
    AS $$ SELECT coalesce((extract(epoch FROM t) * 1000)::bigint, 0) $$;
