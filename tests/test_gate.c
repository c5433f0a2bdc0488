/* test_gate.c - the render gate (src/serve/gate.h): live renders never
 * wait, offline ones wait for every live render to end (and only then),
 * and a gate made off holds nothing back. Waiting is observed
 * through the gate's own counts, so no check depends on timing.
 * Prints one line per check and a final "N passed, M failed" line. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "gate.h"

static int g_pass, g_fail;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    ok ? g_pass++ : g_fail++;
}

typedef struct {
    ls_gate *g;
    atomic_int inside; /* entered and not yet told to leave */
    atomic_int release;
} offline_arg;

static void *offline_render(void *p) {
    offline_arg *a = p;
    ls_gate_enter(a->g, LS_GATE_OFFLINE, 1);
    atomic_fetch_add(&a->inside, 1);
    while (!atomic_load(&a->release)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_sub(&a->inside, 1);
    ls_gate_leave(a->g, LS_GATE_OFFLINE);
    return NULL;
}

/* Until the gate counts n offline renders waiting and m running. */
static void until(ls_gate *g, int waiting, int running) {
    for (;;) {
        ls_gate_stats st;
        ls_gate_stats_get(g, &st);
        if (st.waiting[LS_GATE_OFFLINE] == waiting && st.running[LS_GATE_OFFLINE] == running) return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void test_classes(void) {
    check(ls_gate_class_of(0, 0) == LS_GATE_LIVE, "no audio yet: live");
    check(ls_gate_class_of(10.5, 10.0) == LS_GATE_LIVE, "half a second ahead of the clock: live");
    check(ls_gate_class_of(11.01, 10.0) == LS_GATE_OFFLINE, "more than LS_GATE_AHEAD_S ahead: offline");
    check(ls_gate_class_of(60, 0.2) == LS_GATE_OFFLINE, "a minute of audio at once: offline");
}

static void test_offline_waits_for_live(void) {
    ls_gate *g = ls_gate_new(1);
    offline_arg a = {.g = g};
    ls_gate_enter(g, LS_GATE_LIVE, 1);
    ls_gate_enter(g, LS_GATE_LIVE, 1); /* a second live render does not wait either */
    pthread_t t;
    pthread_create(&t, NULL, offline_render, &a);
    until(g, 1, 0);
    check(atomic_load(&a.inside) == 0, "an offline render waits while live renders run");
    ls_gate_leave(g, LS_GATE_LIVE);
    ls_gate_stats st;
    ls_gate_stats_get(g, &st);
    check(st.waiting[LS_GATE_OFFLINE] == 1 && atomic_load(&a.inside) == 0, "... while any live render runs");
    ls_gate_leave(g, LS_GATE_LIVE);
    until(g, 0, 1);
    check(atomic_load(&a.inside) == 1, "it starts once the last live render ends");
    ls_gate_enter(g, LS_GATE_LIVE, 1); /* live work never waits for offline work */
    ls_gate_stats_get(g, &st);
    check(st.running[LS_GATE_LIVE] == 1 && st.running[LS_GATE_OFFLINE] == 1,
          "a live render starts while an offline one runs (it is not interrupted)");
    ls_gate_leave(g, LS_GATE_LIVE);
    atomic_store(&a.release, 1);
    pthread_join(t, NULL);
    ls_gate_stats_get(g, &st);
    check(st.renders[LS_GATE_LIVE] == 3 && st.renders[LS_GATE_OFFLINE] == 1 && st.waits == 1,
          "counts: 3 live, 1 offline, 1 wait (%lld, %lld, %lld)", (long long)st.renders[0], (long long)st.renders[1],
          (long long)st.waits);
    ls_gate_free(g);
}

static void test_offline_alone(void) {
    ls_gate *g = ls_gate_new(1);
    ls_gate_enter(g, LS_GATE_OFFLINE, 1); /* no live work: offline renders run side by side */
    ls_gate_enter(g, LS_GATE_OFFLINE, 1);
    ls_gate_stats st;
    ls_gate_stats_get(g, &st);
    check(st.running[LS_GATE_OFFLINE] == 2 && st.waits == 0, "without live work, offline renders start at once");
    ls_gate_leave(g, LS_GATE_OFFLINE);
    ls_gate_leave(g, LS_GATE_OFFLINE);
    ls_gate_free(g);
}

static void test_live_recent(void) {
    ls_gate *g = ls_gate_new(1);
    check(!ls_gate_live_recent(g), "no live render yet: offline work goes in batches");
    ls_gate_enter(g, LS_GATE_LIVE, 1);
    check(ls_gate_live_recent(g), "a live render running: offline work goes frame by frame");
    ls_gate_leave(g, LS_GATE_LIVE);
    check(ls_gate_live_recent(g), "... and just after it (within LS_GATE_RECENT_MS)");
    ls_gate_free(g);
}

static void test_gate_off(void) {
    ls_gate *g = ls_gate_new(0);
    ls_gate_enter(g, LS_GATE_LIVE, 1);
    check(!ls_gate_live_recent(g), "gate off: offline work is never split for live work");
    ls_gate_enter(g, LS_GATE_OFFLINE, 1); /* would block forever with the gate on */
    ls_gate_enter(g, LS_GATE_OFFLINE, 1);
    ls_gate_stats st;
    ls_gate_stats_get(g, &st);
    check(st.running[LS_GATE_OFFLINE] == 2 && st.waits == 0, "gate off: offline renders start beside a live one");
    ls_gate_leave(g, LS_GATE_OFFLINE);
    ls_gate_leave(g, LS_GATE_OFFLINE);
    ls_gate_leave(g, LS_GATE_LIVE);
    ls_gate_free(g);
}

int main(void) {
    test_classes();
    test_offline_waits_for_live();
    test_offline_alone();
    test_live_recent();
    test_gate_off();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
