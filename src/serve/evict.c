/* evict.c - see evict.h.
 *
 * Victim choice is a sort: every candidate gets a key (guarded flag first,
 * then the policy's number, then activity) and the shortest prefix of the
 * sorted array that makes the need fit is the answer. Candidates are the
 * loaded models (a handful), so a qsort per admission is plenty; the keys are
 * stored in the candidates first because qsort's comparator cannot see the
 * clock.
 */
#include "evict.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

const char *ls_policy_name(ls_policy p) {
    switch (p) {
    case LS_POLICY_LRU: return "lru";
    case LS_POLICY_LFU: return "lfu";
    case LS_POLICY_LFU_COUNT: return "lfu_count";
    }
    return "unknown";
}

/* ---- frequency score ---- */

static const double LN2 = 0.693147180559945309417232121458;

double ls_freq_at(const ls_freq *f, uint64_t now_ns, uint64_t half_life_ns) {
    if (!half_life_ns || now_ns <= f->at_ns || f->value <= 0) return f->value;
    double halves = (double)(now_ns - f->at_ns) / (double)half_life_ns;
    return f->value * exp2(-halves);
}

static void freq_decay(ls_freq *f, uint64_t now_ns, uint64_t half_life_ns) {
    f->value = ls_freq_at(f, now_ns, half_life_ns);
    if (now_ns > f->at_ns) f->at_ns = now_ns;
}

void ls_freq_hit(ls_freq *f, uint64_t now_ns, uint64_t half_life_ns) {
    freq_decay(f, now_ns, half_life_ns);
    /* log2(2^s + 1) written so that it stays exact for large s (2^s + 1
     * would round to 2^s beyond 2^53). */
    f->value += log1p(exp2(-f->value)) / LN2;
}

void ls_freq_loaded(ls_freq *f, uint64_t now_ns, uint64_t half_life_ns, double initial) {
    freq_decay(f, now_ns, half_life_ns);
    if (f->value < initial) f->value = initial;
}

/* ---- victim choice ---- */

int ls_evict_guarded(const ls_evict_params *p, uint64_t now_ns, uint64_t loaded_ns) {
    return p->min_residency_ns && now_ns >= loaded_ns && now_ns - loaded_ns < p->min_residency_ns;
}

/* Eviction order: unguarded before guarded, then the policy's key (lower
 * first), then older activity first. */
static int cmp_cand(const void *a, const void *b) {
    const ls_evict_cand *x = a, *y = b;
    if (x->guarded != y->guarded) return x->guarded - y->guarded;
    if (x->key_ != y->key_) return x->key_ < y->key_ ? -1 : 1;
    return x->activity_ < y->activity_ ? -1 : x->activity_ > y->activity_ ? 1 : 0;
}

static int fits(const ls_evict_need *need, int64_t count, ls_mem mem) {
    if (count > need->max_count) return 0;
    if (need->max_mem && mem.host > need->max_mem) return 0;
    if (need->max_gpu && mem.gpu > need->max_gpu) return 0;
    return 1;
}

static uint64_t minus(uint64_t a, uint64_t b) { return b < a ? a - b : 0; }

int ls_evict_select(const ls_evict_params *p, uint64_t now_ns, ls_evict_reason why,
                    const ls_evict_need *need, ls_evict_cand *c, int n) {
    assert(n >= 0 && (c || n == 0));
    for (int i = 0; i < n; i++) {
        c[i].frequency = ls_freq_at(&c[i].freq, now_ns, p->half_life_ns);
        /* The idle sweep ignores the guard: idleness is not churn. */
        c[i].guarded = why != LS_EVICT_IDLE && ls_evict_guarded(p, now_ns, c[i].loaded_ns);
        c[i].activity_ = ls_evict_activity(c[i].last_use_ns, c[i].loaded_ns);
        c[i].key_ = p->policy == LS_POLICY_LFU         ? c[i].frequency
                    : p->policy == LS_POLICY_LFU_COUNT ? (double)c[i].uses
                                                       : 0.0;
    }
    if (n > 1) qsort(c, (size_t)n, sizeof *c, cmp_cand);

    if (why == LS_EVICT_IDLE) {
        if (!p->idle_ns) return 0;
        int k = 0;
        for (int i = 0; i < n; i++) {
            uint64_t act = c[i].activity_;
            if (now_ns < act || now_ns - act <= p->idle_ns) continue;
            /* c[k..i) are not idle: swapping keeps the idle prefix in order. */
            ls_evict_cand t = c[k];
            c[k] = c[i];
            c[i] = t;
            k++;
        }
        return k;
    }

    assert(need);
    int64_t count = need->count;
    ls_mem mem = need->mem;
    if (fits(need, count, mem)) return 0;
    for (int i = 0; i < n; i++) {
        if (c[i].guarded && why == LS_EVICT_ADMIT) break; /* guarded sort last */
        count--;
        mem.host = minus(mem.host, c[i].charged.host);
        mem.gpu = minus(mem.gpu, c[i].charged.gpu);
        if (fits(need, count, mem)) return i + 1;
    }
    return -1;
}
