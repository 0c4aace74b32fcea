-- Milliseconds since the epoch, 0 for NULL: the unit of every time on the wire. STABLE, as
-- extract() from a timestamptz is: declared IMMUTABLE it was never inlined, and every call parsed
-- and planned its body.
CREATE OR REPLACE FUNCTION to_ms(t timestamptz) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT coalesce((extract(epoch FROM t) * 1000)::bigint, 0) $$;
