/* log.h - process-wide logger. Lines go to stderr, one write(2) per line so
 * lines from different threads never interleave. */
#ifndef LS_LOG_H
#define LS_LOG_H

typedef enum { LS_LOG_DEBUG = 0, LS_LOG_INFO, LS_LOG_WARN, LS_LOG_ERROR } ls_log_level;

void ls_log_set_level(ls_log_level level);

/* One JSON object per line ({"ts","level","request_id","msg"}) instead of
 * text, for log collectors. */
void ls_log_set_json(int on);

/* Tag this thread's lines with a request id (NULL clears). */
void ls_log_set_request(const char *id);
void ls_log(ls_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_DEBUG(...) ls_log(LS_LOG_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) ls_log(LS_LOG_INFO, __VA_ARGS__)
#define LOG_WARN(...) ls_log(LS_LOG_WARN, __VA_ARGS__)
#define LOG_ERROR(...) ls_log(LS_LOG_ERROR, __VA_ARGS__)

#endif
