DROP FUNCTION calc_complete(bigint, integer, text, double precision, text);
DROP FUNCTION calc_claim(bigint, integer, text, integer);
DROP FUNCTION calc_fail_expression(bigint, text);
DROP FUNCTION calc_event(bigint, bigint, text, jsonb);
