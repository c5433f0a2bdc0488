/* log.c - see log.h. */
#define _GNU_SOURCE
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = LS_LOG_INFO;
static atomic_int g_json = 0;
/* The request the calling thread is working on; set by the transport
 * around a handler, so every line a request causes carries its id. */
static _Thread_local char tl_request[40];

void ls_log_set_level(ls_log_level level) { atomic_store(&g_level, (int)level); }
void ls_log_set_json(int on) { atomic_store(&g_json, on ? 1 : 0); }

void ls_log_set_request(const char *id) {
    if (!id)
        tl_request[0] = 0;
    else
        snprintf(tl_request, sizeof tl_request, "%s", id);
}

/* Append s to out[*n..cap) as the inside of a JSON string. */
static void json_escape(char *out, size_t cap, size_t *n, const char *s) {
    for (; *s && *n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)c;
        } else if (c < 0x20) {
            *n += (size_t)snprintf(out + *n, cap - *n, "\\u%04x", c);
        } else {
            out[(*n)++] = (char)c;
        }
    }
}

void ls_log(ls_log_level level, const char *fmt, ...) {
    if ((int)level < atomic_load(&g_level)) return;
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *lower[] = {"debug", "info", "warn", "error"};
    char msg[1536], line[2048], stamp[64];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(ts.tv_nsec / 1000000) % 1000);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    size_t n;
    if (atomic_load(&g_json)) {
        n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",", stamp, lower[level]);
        if (tl_request[0]) n += (size_t)snprintf(line + n, sizeof line - n, "\"request_id\":\"%s\",", tl_request);
        n += (size_t)snprintf(line + n, sizeof line - n, "\"msg\":\"");
        json_escape(line, sizeof line, &n, msg);
        n += (size_t)snprintf(line + n, sizeof line - n, "\"}");
    } else if (tl_request[0]) {
        n = (size_t)snprintf(line, sizeof line, "%s %-5s [%s] %s", stamp, names[level], tl_request, msg);
    } else {
        n = (size_t)snprintf(line, sizeof line, "%s %-5s %s", stamp, names[level], msg);
    }
    if (n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
