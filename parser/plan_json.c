#include "plan_json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "numfmt.h"

void plan_json_number(FILE *f, double v)
{
    char buf[NUMFMT_DOUBLE_LEN];

    if (!isfinite(v)) {
        fputs("null", f);
        return;
    }
    fputs(numfmt_double(buf, sizeof buf, v), f);
}

void plan_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void write_operand(FILE *f, const plan_operand *o)
{
    if (o->is_node) {
        fprintf(f, "{\"node\":%" PRId32 "}", o->node);
    } else {
        fputs("{\"value\":", f);
        plan_json_number(f, o->value);
        fputc('}', f);
    }
}

void plan_json_write(FILE *f, const plan *p, int with_value)
{
    static const char ops[PLAN_NOPS] = {'+', '-', '*', '/'};

    fputs("{\"nodes\":[", f);
    for (size_t i = 0; i < p->n_nodes; i++) {
        const plan_node *n = &p->nodes[i];

        fprintf(f, "%s{\"id\":%zu,\"op\":\"%c\",\"left\":", i ? "," : "", i, ops[n->op]);
        write_operand(f, &n->left);
        fputs(",\"right\":", f);
        write_operand(f, &n->right);
        fprintf(f,
                ",\"parent\":%" PRId32 ",\"parent_side\":%d,\"start_ms\":%" PRId64
                ",\"tail_ms\":%" PRId64 "}",
                n->parent, n->parent_side, n->start_ms, n->tail_ms);
    }
    fprintf(f,
            "],\"node_count\":%zu,\"depth\":%zu,\"critical_path_ms\":%" PRId64
            ",\"source_critical_path_ms\":%" PRId64 ",\"reassociated\":%s",
            p->n_nodes, p->depth, p->critical_path_ms, p->source_critical_path_ms,
            p->reassociated ? "true" : "false");
    if (with_value) {
        fputs(",\"value\":", f);
        plan_json_number(f, plan_eval(p));
    }
    fputs("}\n", f);
}

void plan_json_write_error(FILE *f, const plan_error *err)
{
    fputs("{\"error\":", f);
    plan_json_string(f, err->message);
    fprintf(f, ",\"position\":%zu}\n", err->position);
}
