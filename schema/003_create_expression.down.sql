DROP FUNCTION calc_create_expression(bigint, text, text, double precision, integer, bigint, integer,
                                     text[], integer[], double precision[], integer[],
                                     double precision[], integer[], integer[], bigint[]);
