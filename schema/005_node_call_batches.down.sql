-- Calls run one per transaction again.
DROP FUNCTION calc_node_batch(boolean[], bigint[], integer[], text[], double precision[], text[],
                               integer);
