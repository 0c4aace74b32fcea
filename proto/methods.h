/* The DbAgent service's method paths, written by hand: gRPC has no C service generator. */
#ifndef CALC_METHODS_H
#define CALC_METHODS_H

#define DBA_SERVICE "/calc.v1.DbAgent/"

#define DBA_CREATE_USER           DBA_SERVICE "CreateUser"
#define DBA_FIND_USER             DBA_SERVICE "FindUser"
#define DBA_ENSURE_ADMIN          DBA_SERVICE "EnsureAdmin"
#define DBA_STORE_REFRESH_TOKEN   DBA_SERVICE "StoreRefreshToken"
#define DBA_ROTATE_REFRESH_TOKEN  DBA_SERVICE "RotateRefreshToken"
#define DBA_REVOKE_REFRESH_FAMILY DBA_SERVICE "RevokeRefreshFamily"
#define DBA_CREATE_EXPRESSION     DBA_SERVICE "CreateExpression"
#define DBA_GET_EXPRESSION        DBA_SERVICE "GetExpression"
#define DBA_GET_EXPRESSIONS       DBA_SERVICE "GetExpressions"
#define DBA_LIST_EXPRESSIONS      DBA_SERVICE "ListExpressions"
#define DBA_CANCEL_EXPRESSION     DBA_SERVICE "CancelExpression"
#define DBA_TAKE_READY            DBA_SERVICE "TakeReady"
#define DBA_MARK_QUEUED           DBA_SERVICE "MarkQueued"
#define DBA_CLAIM_NODE            DBA_SERVICE "ClaimNode"
#define DBA_COMPLETE_NODE         DBA_SERVICE "CompleteNode"
#define DBA_REQUEUE_STALE         DBA_SERVICE "RequeueStale"
#define DBA_HEARTBEAT             DBA_SERVICE "Heartbeat"
#define DBA_LIST_AGENTS           DBA_SERVICE "ListAgents"
#define DBA_GET_DURATIONS         DBA_SERVICE "GetDurations"
#define DBA_GET_STATS             DBA_SERVICE "GetStats"
#define DBA_SET_DURATIONS         DBA_SERVICE "SetDurations"
#define DBA_LIST_EVENTS           DBA_SERVICE "ListEvents"
#define DBA_CHANGE_PASSWORD       DBA_SERVICE "ChangePassword"
#define DBA_LIMIT_LOGIN           DBA_SERVICE "LimitLogin"
#define DBA_RECORD_LOGIN          DBA_SERVICE "RecordLogin"
#define DBA_WATCH_EVENTS          DBA_SERVICE "WatchEvents"
#define DBA_WAKE_WATCH            DBA_SERVICE "WakeWatch"
#define DBA_GET_NODES             DBA_SERVICE "GetNodes"

#endif
