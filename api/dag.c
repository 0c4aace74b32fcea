#include "dag.h"

#include <stdlib.h>

#include "mem.h"

int dag_time(dag_node *nodes, size_t n, int64_t *finish_ms)
{
    *finish_ms = 0;
    unsigned char *has_parent = xcalloc(n + 1, 1);
    int rc = DAG_OK;
    /* Forwards: children first, so each start is the latest end of the node's operands. */
    for (size_t i = 0; i < n; i++) {
        nodes[i].start_ms = 0;
        nodes[i].critical = 0;
        for (int s = 0; s < 2; s++) {
            int32_t c = nodes[i].child[s];
            if (c < 0)
                continue;
            if ((size_t)c >= i || has_parent[c]) {
                rc = DAG_ERR;
                goto out;
            }
            has_parent[c] = 1;
            if (nodes[c].start_ms + nodes[c].delay_ms > nodes[i].start_ms)
                nodes[i].start_ms = nodes[c].start_ms + nodes[c].delay_ms;
        }
        if (nodes[i].start_ms + nodes[i].delay_ms > *finish_ms)
            *finish_ms = nodes[i].start_ms + nodes[i].delay_ms;
    }
    /* Backwards, parents first: a root ending at the finish is critical, and so is an operand of
     * a critical node that ends just when that node can start (every tie is marked). */
    for (size_t i = n; i-- > 0;) {
        if (!has_parent[i] && nodes[i].start_ms + nodes[i].delay_ms == *finish_ms)
            nodes[i].critical = 1;
        if (!nodes[i].critical)
            continue;
        for (int s = 0; s < 2; s++) {
            int32_t c = nodes[i].child[s];
            if (c >= 0 && nodes[c].start_ms + nodes[c].delay_ms == nodes[i].start_ms)
                nodes[c].critical = 1;
        }
    }
out:
    if (rc != DAG_OK)
        for (size_t i = 0; i < n; i++)
            nodes[i].critical = 0;
    free(has_parent);
    return rc;
}
