/* gate.c - see gate.h. One mutex and one condition variable: renders
 * are milliseconds long and few at a time, so a queue would buy nothing. */
#include "gate.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

#include "common.h"

struct ls_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a live render ended, or an offline one did */
    int enabled;
    uint64_t live_ns; /* when a live render last ended */
    ls_gate_stats st;
};

ls_gate *ls_gate_new(int enabled) {
    ls_gate *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->enabled = enabled != 0;
    return g;
}

void ls_gate_free(ls_gate *g) {
    if (!g) return;
    assert(g->st.running[0] == 0 && g->st.running[1] == 0 && g->st.waiting[0] == 0 && g->st.waiting[1] == 0);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static int offline_may_start(const ls_gate *g) { return g->st.running[LS_GATE_LIVE] == 0; }

void ls_gate_enter(ls_gate *g, ls_gate_class c, int render) {
    pthread_mutex_lock(&g->mu);
    if (c == LS_GATE_OFFLINE && g->enabled && !offline_may_start(g)) {
        g->st.waits++;
        g->st.waiting[c]++;
        while (!offline_may_start(g)) pthread_cond_wait(&g->cv, &g->mu);
        g->st.waiting[c]--;
    }
    g->st.running[c]++;
    g->st.renders[c] += render != 0;
    pthread_mutex_unlock(&g->mu);
}

void ls_gate_leave(ls_gate *g, ls_gate_class c) {
    pthread_mutex_lock(&g->mu);
    assert(g->st.running[c] > 0);
    g->st.running[c]--;
    if (c == LS_GATE_LIVE) g->live_ns = ls_mono_ns();
    /* Only offline renders wait: wake them when the last live render ends. */
    if (g->st.waiting[LS_GATE_OFFLINE] && c == LS_GATE_LIVE && g->st.running[LS_GATE_LIVE] == 0)
        pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

int ls_gate_live_recent(ls_gate *g) {
    pthread_mutex_lock(&g->mu);
    int r = g->enabled && (g->st.running[LS_GATE_LIVE] > 0 ||
                           (g->live_ns && ls_mono_ns() - g->live_ns < LS_GATE_RECENT_MS * 1000000ull));
    pthread_mutex_unlock(&g->mu);
    return r;
}

ls_gate_class ls_gate_class_of(double audio_s, double elapsed_s) {
    return audio_s > elapsed_s + LS_GATE_AHEAD_S ? LS_GATE_OFFLINE : LS_GATE_LIVE;
}

void ls_gate_stats_get(ls_gate *g, ls_gate_stats *out) {
    pthread_mutex_lock(&g->mu);
    *out = g->st;
    pthread_mutex_unlock(&g->mu);
}
