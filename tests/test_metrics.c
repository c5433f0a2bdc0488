/* test_metrics.c - unit tests for metrics.c: exact exposition lines after
 * known recordings, histogram bucketing at the bounds, the "(unknown)" model,
 * concurrent recording, and (with argv[1] = promtool) the format check.
 *
 * Same style as the other unit tests: one line per check, "N passed, M
 * failed" last, non-zero exit on failure. */
#define _GNU_SOURCE
#include "metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(const char *what, int ok) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (ok)
        passed++;
    else
        failed++;
}

/* The text holds `line` as a whole line. */
static int has_line(const char *text, const char *line) {
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

static int count(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++) n++;
    return n;
}

static void expect_line(const char *text, const char *line) {
    char what[256];
    snprintf(what, sizeof what, "line: %s", line);
    check(what, has_line(text, line));
}

static void fake_snapshot(ls_entry_stats st[2], ls_registry_totals *tot) {
    memset(st, 0, 2 * sizeof *st);
    memset(tot, 0, sizeof *tot);
    snprintf(st[0].id, sizeof st[0].id, "a");
    st[0].state = LS_STATE_LOADED;
    st[0].memory_measured_bytes = 1000;
    st[0].memory_estimate_bytes = 5000;
    st[0].in_flight = 2;
    st[0].live_sessions = 1;
    st[0].frequency = 5.5;
    st[0].eviction_count = 3;
    st[0].idle_unload_count = 4;
    snprintf(st[1].id, sizeof st[1].id, "b");
    st[1].state = LS_STATE_LOADING;
    st[1].memory_estimate_bytes = 7000;
    tot->loaded_models = 2;
    tot->max_models = 4;
    tot->memory_bytes = 8000;
    tot->max_memory_bytes = 1ull << 33;
    tot->total_load_failures = 5;
}

static char *render(ls_metrics *m, int queue_depth) {
    ls_entry_stats st[2];
    ls_registry_totals tot;
    fake_snapshot(st, &tot);
    ls_metrics_extra extra = {.queue_depth = queue_depth};
    ls_buf out = {0};
    if (ls_metrics_render(m, st, 2, &tot, &extra, &out) != 0 || ls_buf_append(&out, "", 1) != 0) {
        ls_buf_free(&out);
        return NULL;
    }
    return (char *)out.data;
}

static void test_render(void) {
    const char *ids[] = {"a", "b"};
    ls_metrics *m = ls_metrics_create(ids, 2);
    check("create", m != NULL);
    if (!m) return;

    char *t = render(m, 0);
    check("render with nothing recorded", t != NULL);
    if (t) {
        expect_line(t, "# TYPE lipsync_requests_total counter");
        expect_line(t, "lipsync_requests_total{model=\"a\",code=\"OK\"} 0");
        check("no (unknown) series before such a request", !strstr(t, "(unknown)"));
        expect_line(t, "lipsync_inference_duration_seconds_count{model=\"b\"} 0");
    }
    free(t);

    ls_metrics_request(m, "a", LS_OK);
    ls_metrics_request(m, "a", LS_OK);
    ls_metrics_request(m, "a", LS_INVALID_ARGUMENT);
    ls_metrics_request(m, "nope", LS_NOT_FOUND);
    ls_metrics_request(m, NULL, LS_INVALID_ARGUMENT);
    ls_metrics_request(m, "b", (ls_code)11); /* not an ls_code: counted as UNKNOWN */
    ls_metrics_request(m, "b", (ls_code)99);
    /* Bounds are inclusive upper limits (le). */
    ls_metrics_observe(m, LS_HIST_INFERENCE, "a", 0.001);
    ls_metrics_observe(m, LS_HIST_INFERENCE, "a", 0.0011);
    ls_metrics_observe(m, LS_HIST_INFERENCE, "a", 20.0);
    ls_metrics_observe(m, LS_HIST_COMPOSITE, "a", 0.25);
    ls_metrics_observe(m, LS_HIST_MODEL_LOAD, "b", 1.5);
    ls_metrics_observe(m, LS_HIST_MODEL_LOAD, "nope", 1.5); /* ignored */
    ls_metrics_observe(m, LS_HIST_INFERENCE, "b", -1.0);     /* clamped to 0 */

    check("add a model later", ls_metrics_add_model(m, "c") == 0 && ls_metrics_add_model(m, "a") == 0);
    ls_metrics_request(m, "c", LS_OK);
    ls_metrics_observe(m, LS_HIST_MODEL_LOAD, "c", 0.01);

    t = render(m, 7);
    check("render after recording", t != NULL);
    if (t) {
        expect_line(t, "lipsync_requests_total{model=\"a\",code=\"OK\"} 2");
        expect_line(t, "lipsync_requests_total{model=\"a\",code=\"INVALID_ARGUMENT\"} 1");
        expect_line(t, "lipsync_requests_total{model=\"(unknown)\",code=\"NOT_FOUND\"} 1");
        expect_line(t, "lipsync_requests_total{model=\"(unknown)\",code=\"INVALID_ARGUMENT\"} 1");
        expect_line(t, "lipsync_requests_total{model=\"b\",code=\"UNKNOWN\"} 2");
        expect_line(t, "lipsync_requests_total{model=\"b\",code=\"OK\"} 0");
        expect_line(t, "# TYPE lipsync_inference_duration_seconds histogram");
        expect_line(t, "lipsync_inference_duration_seconds_bucket{model=\"a\",le=\"0.001\"} 1");
        expect_line(t, "lipsync_inference_duration_seconds_bucket{model=\"a\",le=\"0.0025\"} 2");
        expect_line(t, "lipsync_inference_duration_seconds_bucket{model=\"a\",le=\"10\"} 2");
        expect_line(t, "lipsync_inference_duration_seconds_bucket{model=\"a\",le=\"+Inf\"} 3");
        expect_line(t, "lipsync_inference_duration_seconds_count{model=\"a\"} 3");
        expect_line(t, "lipsync_inference_duration_seconds_sum{model=\"a\"} 20.002099999999999");
        expect_line(t, "lipsync_inference_duration_seconds_bucket{model=\"b\",le=\"0.001\"} 1");
        expect_line(t, "lipsync_inference_duration_seconds_sum{model=\"b\"} 0");
        expect_line(t, "lipsync_composite_duration_seconds_bucket{model=\"a\",le=\"0.1\"} 0");
        expect_line(t, "lipsync_composite_duration_seconds_bucket{model=\"a\",le=\"0.25\"} 1");
        expect_line(t, "lipsync_model_load_duration_seconds_bucket{model=\"b\",le=\"1\"} 0");
        expect_line(t, "lipsync_model_load_duration_seconds_bucket{model=\"b\",le=\"2.5\"} 1");
        expect_line(t, "lipsync_model_load_duration_seconds_count{model=\"b\"} 1");
        expect_line(t, "lipsync_model_load_duration_seconds_count{model=\"a\"} 0");
        check("no histogram for (unknown)",
              !strstr(t, "lipsync_model_load_duration_seconds_count{model=\"(unknown)\""));
        expect_line(t, "lipsync_model_loaded{model=\"a\"} 1");
        expect_line(t, "lipsync_model_loaded{model=\"b\"} 0");
        expect_line(t, "lipsync_model_memory_bytes{model=\"a\"} 1000");
        expect_line(t, "lipsync_model_memory_bytes{model=\"b\"} 7000");
        expect_line(t, "lipsync_model_in_flight{model=\"a\"} 2");
        expect_line(t, "lipsync_model_live_sessions{model=\"a\"} 1");
        expect_line(t, "lipsync_model_live_sessions{model=\"b\"} 0");
        expect_line(t, "# TYPE lipsync_model_frequency gauge");
        expect_line(t, "lipsync_model_frequency{model=\"a\"} 5.5");
        expect_line(t, "lipsync_model_frequency{model=\"b\"} 0");
        expect_line(t, "lipsync_model_evictions_total{model=\"a\",reason=\"evicted\"} 3");
        expect_line(t, "lipsync_model_evictions_total{model=\"a\",reason=\"idle\"} 4");
        expect_line(t, "lipsync_models_loaded 2");
        expect_line(t, "lipsync_models_max 4");
        expect_line(t, "lipsync_memory_bytes 8000");
        expect_line(t, "lipsync_memory_max_bytes 8589934592");
        expect_line(t, "lipsync_queue_depth 7");
        expect_line(t, "lipsync_model_load_failures_total 5");
        expect_line(t, "lipsync_requests_total{model=\"c\",code=\"OK\"} 1");
        expect_line(t, "lipsync_model_load_duration_seconds_bucket{model=\"c\",le=\"0.05\"} 1");
        check("a model added twice has one series",
              count(t, "lipsync_requests_total{model=\"a\",code=\"OK\"}") == 1);
        check("ends with a newline", t[strlen(t) - 1] == '\n');
    }
    free(t);
    ls_metrics_destroy(m);
}

typedef struct {
    ls_metrics *m;
    int n;
} job;

static void *hammer(void *arg) {
    job *j = arg;
    for (int i = 0; i < j->n; i++) {
        ls_metrics_request(j->m, "a", LS_OK);
        ls_metrics_observe(j->m, LS_HIST_INFERENCE, "a", 0.003);
    }
    return NULL;
}

static void test_threads(void) {
    const char *ids[] = {"a"};
    ls_metrics *m = ls_metrics_create(ids, 1);
    if (!m) {
        check("create", 0);
        return;
    }
    enum { THREADS = 4, EACH = 20000 };
    pthread_t th[THREADS];
    job j = {m, EACH};
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, hammer, &j);
    ls_entry_stats st[1];
    ls_registry_totals tot;
    memset(st, 0, sizeof st);
    memset(&tot, 0, sizeof tot);
    snprintf(st[0].id, sizeof st[0].id, "a");
    /* Scrapes while recording: every histogram seen must be self-consistent. */
    int consistent = 1;
    for (int k = 0; k < 50; k++) {
        ls_buf out = {0};
        ls_metrics_render(m, st, 1, &tot, NULL, &out);
        ls_buf_append(&out, "", 1);
        const char *inf = strstr((char *)out.data, "lipsync_inference_duration_seconds_bucket{model=\"a\",le=\"+Inf\"} ");
        const char *cnt = strstr((char *)out.data, "lipsync_inference_duration_seconds_count{model=\"a\"} ");
        if (!inf || !cnt || atoll(strchr(inf, '}') + 2) != atoll(strchr(cnt, '}') + 2)) consistent = 0;
        ls_buf_free(&out);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    check("histogram count equals +Inf bucket in scrapes during recording", consistent);
    ls_buf out = {0};
    ls_metrics_render(m, st, 1, &tot, NULL, &out);
    ls_buf_append(&out, "", 1);
    char want[128];
    snprintf(want, sizeof want, "lipsync_requests_total{model=\"a\",code=\"OK\"} %d", THREADS * EACH);
    check("no increment lost under 4 threads", has_line((char *)out.data, want));
    snprintf(want, sizeof want, "lipsync_inference_duration_seconds_bucket{model=\"a\",le=\"0.005\"} %d",
             THREADS * EACH);
    check("no observation lost under 4 threads", has_line((char *)out.data, want));
    ls_buf_free(&out);
    ls_metrics_destroy(m);
}

/* The exposition of test_render's recordings through `promtool check
 * metrics` (argv[1]); it lints names, types, HELP, and histogram rules. */
static void test_promtool(const char *promtool) {
    const char *ids[] = {"a", "b"};
    ls_metrics *m = ls_metrics_create(ids, 2);
    ls_metrics_request(m, "a", LS_OK);
    ls_metrics_request(m, "x", LS_NOT_FOUND);
    ls_metrics_observe(m, LS_HIST_INFERENCE, "a", 0.02);
    char *t = render(m, 1);
    ls_metrics_destroy(m);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' check metrics", promtool);
    FILE *p = popen(cmd, "w");
    int rc = -1;
    if (p && t) {
        fputs(t, p);
        rc = pclose(p);
    } else if (p) {
        pclose(p);
    }
    free(t);
    check("promtool check metrics accepts the exposition", rc == 0);
}

int main(int argc, char **argv) {
    test_render();
    test_threads();
    if (argc > 1) {
        test_promtool(argv[1]);
    } else {
        /* Not a skip: the build registers this test with promtool's path. */
        check("promtool path given (scripts/setup.sh installs the prometheus package)", 0);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
