/* dba: the API's client of dbagent, and the mapping of its status codes to HTTP. */
#ifndef CALC_DBA_H
#define CALC_DBA_H

#include "buf.h"
#include "calc.pb-c.h"
#include "http.h"
#include "rpc.h"

extern rpc_client *dba;

/* Opens the client (over TLS when tls turns it on); -1 with err set when its files cannot be
 * read. */
int dba_open(const char *addr, const char *token, const rpc_tls *tls, char *err, size_t errlen);
void dba_close(void);

/*
 * A call on behalf of an HTTP request: on failure replies to r with the fitting status
 * (404, 409, 429, 503...) and returns the rpc code. On RPC_OK the caller frees *resp. A call safe
 * to repeat (dba_repeatable) is made again, the same, after a short pause, within one deadline.
 */
int dba_call(http_req *r, const char *path, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, void *resp);

/* The same call and retries without a reply: returns the rpc code, with dbagent's message in
 * err on failure; who names the caller in the log of a retry ("reads", "POST /api/v1/login"). */
int dba_call_quiet(const char *who, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *desc, void *resp, char *err, size_t errlen);

/* The same, with every try and pause ending by deadline (monotonic ms) instead of one
 * DBAGENT_TIMEOUT_MS from now. */
int dba_call_until(const char *who, int64_t deadline, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *desc, void *resp, char *err, size_t errlen);

/* WakeWatch: ends the WatchEvents of watch_id in flight with a generation under gen (or the next
 * one). Returns the rpc code, with dbagent's message in err on failure. */
int dba_wake_watch(const char *watch_id, int64_t gen, int timeout_ms, char *err, size_t errlen);

/* 1 when the call to path that failed with rc may be made again as it was. */
int dba_repeatable(const char *path, int rc);

/* calc_dbagent_retries_total. */
void dba_metrics(buf *b);

/* The HTTP status for a failed call's rpc code: 400, 404, 409, 429, or 503 for the rest. */
int dba_http_status(int rpc_code);

/* Replies to r for a failed call (rc, with dbagent's message err) as dba_call does. */
void dba_reply_failure(http_req *r, const char *path, int rc, const char *err);

#endif
