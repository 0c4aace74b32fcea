/*
 * log: one line per event on stderr: time, level, component, message.
 * Messages name what they concern (request, expression, node, agent); secrets are never logged.
 */
#ifndef CALC_LOG_H
#define CALC_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* component is kept (not copied); call once at start. LOG_LEVEL=debug|info|warn|error. */
void log_init(const char *component);
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
