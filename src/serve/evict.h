/* evict.h - which loaded models to give up, and the frequency score.
 *
 * Why a file of its own: the registry (registry.c) owns states, locking and
 * loader calls; choosing victims is a pure function of a few numbers per
 * candidate and the time now. Kept apart (as Redis keeps evict.c apart from
 * server.c) it can be read, unit-tested and benchmarked without the
 * registry's concurrency. Nothing here locks, allocates or logs.
 *
 * Policies (capacity.eviction_policy), in the order victims are taken:
 *   lru        oldest last activity first; activity = max(last use, load
 *              time), so a model reloaded after a long pause is not the
 *              first victim because of a use older than its current load.
 *   lfu        lowest frequency score first (below), ties by lru.
 *   lfu_count  lowest lifetime usage count first, ties by lru. This is what
 *              the described system called LFU: it never forgets (yesterday's
 *              heavy model outranks today's popular one) and a model just
 *              loaded (count 0 or 1) is always the first victim. Kept for
 *              compatibility and comparison (bench/bench_evict.c).
 *
 * Frequency score. A per-model double that grows logarithmically with use
 * and decays exponentially with time:
 *   - a use turns s into log2(2^s + 1), so n uses from 0 give log2(1 + n):
 *     1000 uses score ~10, a million ~20;
 *   - between uses s halves every half-life (s * 2^(-dt / half_life)),
 *     continuously, so nothing needs a periodic sweep;
 *   - a load sets s to max(s, lfu_initial), so a model just loaded is not
 *     the first victim (default 5: ranked like a model used every ~7 s in
 *     steady state at a 10 minute half-life; below one used every second,
 *     above one used once a minute; it decays like any other if unused).
 * Why this and not Redis's scheme (an 8-bit counter incremented with
 * probability 1/((c - 5) * lfu-log-factor + 1), decremented by one per
 * lfu-decay-time): Redis squeezes the counter into 8 bits of every key of a
 * database holding millions; we keep one score per model (tens of them), so a
 * double costs nothing, and a deterministic update makes the tests and the
 * benchmark exact with an injected clock. The log keeps the history short:
 * halving a log counter forgets in O(log log n) half-lives, where halving a
 * raw count would take O(log n), so a model used a million times yesterday
 * (score 20) falls below one in steady use every second (~7.4) after two
 * half-lives of inactivity.
 *
 * Churn guard (capacity.min_residency_seconds). A model loaded less than
 * min_residency ago is not a victim to admit another model: when only
 * guarded (or pinned) models could make room, the admission fails and the
 * request gets RESOURCE_EXHAUSTED, instead of evicting a model loaded moments
 * ago and loading it again moments later (as ModelMesh does). The guard
 * yields in one case only: a model that turned out larger than its estimate
 * is loaded already and the memory limit must be restored (LS_EVICT_OVERRUN),
 * so guarded models are taken there after every unguarded one.
 */
#ifndef LS_EVICT_H
#define LS_EVICT_H

#include "common.h"

const char *ls_policy_name(ls_policy p); /* "lru", "lfu", "lfu_count" */

/* ---- frequency score ---- */

typedef struct {
    double value;   /* the score at at_ns */
    uint64_t at_ns; /* monotonic time of the last update; 0 = never */
} ls_freq;

/* The score decayed to now (now earlier than at_ns counts as no time).
 * half_life_ns 0 = no decay. */
double ls_freq_at(const ls_freq *f, uint64_t now_ns, uint64_t half_life_ns);

/* One use at now: decay, then s = log2(2^s + 1). */
void ls_freq_hit(ls_freq *f, uint64_t now_ns, uint64_t half_life_ns);

/* A load at now: decay, then s = max(s, initial). */
void ls_freq_loaded(ls_freq *f, uint64_t now_ns, uint64_t half_life_ns, double initial);

/* ---- victim choice ---- */

typedef struct {
    ls_policy policy;
    uint64_t half_life_ns;     /* lfu decay; 0 = never decays */
    uint64_t min_residency_ns; /* churn guard; 0 = none */
    uint64_t idle_ns;          /* LS_EVICT_IDLE: idle for longer than this */
} ls_evict_params;

/* One model that may be given up: loaded, not pinned by config, no request
 * and no session holding it. The caller fills the inputs; ls_evict_select
 * fills the outputs (also for the caller's log line). */
typedef struct {
    void *ref;              /* the caller's: its entry */
    ls_mem charged;         /* bytes it frees, host and GPU */
    uint64_t last_use_ns;   /* 0 = never used */
    uint64_t loaded_ns;     /* when its current load finished */
    int64_t uses;           /* lifetime usage count */
    ls_freq freq;
    /* outputs */
    double frequency;       /* score decayed to now */
    int guarded;            /* loaded less than min_residency ago */
    double key_;            /* private: the policy's sort key */
    uint64_t activity_;     /* private: the tie break */
} ls_evict_cand;

typedef enum {
    LS_EVICT_ADMIT,   /* make room to load a model: guarded ones are never taken */
    LS_EVICT_OVERRUN, /* a loaded model exceeds the memory limit: guarded ones last */
    LS_EVICT_IDLE,    /* the idle sweep: every candidate idle for longer than idle_ns */
} ls_evict_reason;

/* What must fit after the victims are gone (ADMIT, OVERRUN): the charged
 * count and bytes including what is to be admitted, and the limits. */
typedef struct {
    int64_t count, max_count;
    ls_mem mem;
    uint64_t max_mem, max_gpu; /* 0 = no limit on that memory */
} ls_evict_need;

/* The one entry point for every policy and reason. Reorders c[0..n) so the
 * victims come first, in the order they should go, and returns how many:
 *   ADMIT, OVERRUN: the fewest candidates in policy order whose removal makes
 *     count <= max_count, mem.host <= max_mem and mem.gpu <= max_gpu (0 when
 *     it fits already); -1
 *     when even every one allowed is not enough (need may be NULL only for
 *     IDLE).
 *   IDLE: every candidate whose activity is older than idle_ns (need is
 *     ignored; idle_ns 0 selects none).
 * Never fails otherwise; c may be NULL when n is 0. */
int ls_evict_select(const ls_evict_params *p, uint64_t now_ns, ls_evict_reason why,
                    const ls_evict_need *need, ls_evict_cand *c, int n);

/* Is a model loaded at loaded_ns protected by the churn guard at now? */
int ls_evict_guarded(const ls_evict_params *p, uint64_t now_ns, uint64_t loaded_ns);

/* max(last use, load time): what lru orders by and idle measures from. */
static inline uint64_t ls_evict_activity(uint64_t last_use_ns, uint64_t loaded_ns) {
    return last_use_ns > loaded_ns ? last_use_ns : loaded_ns;
}

#endif
