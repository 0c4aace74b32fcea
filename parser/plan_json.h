/*
 * plan_json: the plan and its errors as JSON, the format calc-plan prints (docs/parser.md).
 * Written by hand because the shape is small and fixed.
 */
#ifndef CALC_PLAN_JSON_H
#define CALC_PLAN_JSON_H

#include <stdio.h>

#include "plan.h"

/* One line: {"nodes":[...],"node_count":n,"depth":d,"critical_path_ms":c,...}; with_value
 * adds "value" from plan_eval (null when it is not finite, which JSON cannot hold). */
void plan_json_write(FILE *f, const plan *p, int with_value);

/* One line: {"error":"...","position":p}. */
void plan_json_write_error(FILE *f, const plan_error *err);

/* numfmt_double's text of v (the shortest that reads back); null when not finite. */
void plan_json_number(FILE *f, double v);

/* A JSON string with quotes, escaping quotes, backslashes and control bytes. */
void plan_json_string(FILE *f, const char *s);

#endif
