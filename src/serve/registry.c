/* registry.c - see registry.h.
 *
 * Design
 *  - One pthread mutex (r->mu) guards everything. Each entry has its own
 *    condition variable (e->cond), broadcast when a load it hosts finishes
 *    and when an unload of it finishes. r->cap_cond is broadcast whenever
 *    charged capacity shrinks (admissions waiting for a retiring entry).
 *  - Entries are allocated one by one (stable addresses: leases point at
 *    them), kept in an array in declaration order, and found through a small
 *    open-addressing hash (FNV-1a) of entry pointers.
 *  - A load in progress is a heap "flight" shared by the loading thread and
 *    every waiter (refcounted, freed by the last one out). On success the
 *    loader pins the entry once for each acquire-waiter (f->pins) before
 *    waking them, so no waiter can lose its model to an eviction between the
 *    broadcast and its wake-up: every waiter is answered with the handle.
 *  - Unloads never run under the lock. An entry whose loader->unload is in
 *    progress has e->unloading set; acquires of it wait on e->cond, so load
 *    and unload of one id never overlap.
 *      * Eviction to admit a model: the victim is marked UNLOADED and its
 *        charge removed under the lock (the slot passes to the admitted
 *        entry, which is LOADING and charged); the admitting thread calls
 *        loader->unload for its victims before it calls loader->load, so the
 *        number of live handles never exceeds max_models.
 *      * Every other unload (explicit, idle sweep, last release of a DRAINING
 *        entry, eviction after a measured size overran the memory limit)
 *        "retires" the entry: it stays DRAINING and charged until
 *        loader->unload returns, then becomes UNLOADED and is uncharged. An
 *        admission that would fit once those retirements finish waits for
 *        them (r->cap_cond) instead of failing.
 *  - Times: injected monotonic clock for intervals (LRU order, frequency
 *    decay, churn guard, idle, retry backoff, load duration); injected wall
 *    clock for last_used/loaded_at.
 *  - Which entries to give up (admission, memory overrun, idle sweep) is
 *    decided by evict.c from a candidate array built here under the lock;
 *    this file only applies the choice.
 */
#define _GNU_SOURCE
#include "registry.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"
#include "log.h"

#define ID_MAX 128
#define RING 1024

typedef struct flight {
    int done, ok;
    int refs;  /* threads still to read the outcome (loader + waiters) */
    int pins;  /* acquire-waiters to pin on success */
    int holds; /* session-waiters to hold on success */
    void *handle;
    double load_ms;
    ls_err err;
} flight;

typedef struct entry {
    char id[ID_MAX + 1];
    ls_mem estimate;
    int pinned_config;
    void *model_ctx;

    ls_state state;
    void *handle;
    int refcount;       /* leases (requests) */
    int sessions;       /* session holds */
    int unloading;      /* loader->unload of this entry in progress */
    int counted;        /* counts toward max_models */
    ls_mem charged;     /* bytes charged toward max_memory_bytes / max_gpu_memory_bytes */
    ls_mem measured;
    flight *fl;         /* non-NULL while LOADING */
    pthread_cond_t cond;

    int removed;        /* taken out of the config (reload): invisible, never reloaded */
    int max_in_flight;  /* 0 = no per-model limit on concurrent requests */
    int max_sessions;   /* 0 = no per-model limit on live sessions */
    int64_t sessions_total;

    int has_fail;
    ls_err fail;
    uint64_t failed_ns;

    uint64_t last_used_ns, loaded_ns;
    ls_freq freq;       /* the lfu score (evict.h), kept whatever the policy */
    int64_t last_used_wall, loaded_wall;
    int64_t usage_count, failed_requests, load_count, eviction_count, ok_count;
    int64_t idle_unload_count;
    double last_load_ms, total_load_ms, total_inf_ms, total_comp_ms;
    double ring[RING];
    int ring_n, ring_pos;
} entry;

struct ls_registry {
    pthread_mutex_t mu;
    pthread_cond_t cap_cond;
    ls_registry_limits lim;
    ls_evict_params ep; /* the part of lim evict.c reads */
    ls_loader loader;
    ls_clock clock;

    entry **v;
    int n, cap;
    entry **ht;
    size_t ht_cap; /* power of two, 0 when empty */

    int count;
    ls_mem mem;
    int64_t total_requests, total_loads, total_load_failures, total_evictions, total_idle_unloads;
};

typedef struct {
    entry *e;
    void *h;
} victim;

const char *ls_state_name(ls_state s) {
    switch (s) {
    case LS_STATE_UNLOADED: return "unloaded";
    case LS_STATE_LOADING: return "loading";
    case LS_STATE_LOADED: return "loaded";
    case LS_STATE_DRAINING: return "draining";
    case LS_STATE_FAILED: return "failed";
    }
    return "unknown";
}

/* ---- clocks ---- */

static uint64_t now_ns(ls_registry *r) {
    return r->clock.mono_ns ? r->clock.mono_ns(r->clock.ctx) : ls_mono_ns();
}

static int64_t now_wall(ls_registry *r) {
    return r->clock.wall_ms ? r->clock.wall_ms(r->clock.ctx) : ls_wall_ms();
}

static double ns_to_s(uint64_t ns) { return (double)ns / 1e9; }

/* ---- lookup ---- */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Any entry with this id, including removed ones (see find). */
static entry *find_any(ls_registry *r, const char *id) {
    if (!id || !r->ht_cap || strnlen(id, ID_MAX + 1) > ID_MAX) return NULL;
    size_t mask = r->ht_cap - 1;
    for (size_t i = (size_t)fnv1a(id) & mask;; i = (i + 1) & mask) {
        entry *e = r->ht[i];
        if (!e) return NULL;
        if (strcmp(e->id, id) == 0) return e;
    }
}

/* The entry of a configured id. Removed entries stay in the table (a lease
 * may still point at one) but are invisible to callers. */
static entry *find(ls_registry *r, const char *id) {
    entry *e = find_any(r, id);
    return e && !e->removed ? e : NULL;
}

static void ht_put(entry **ht, size_t cap, entry *e) {
    size_t mask = cap - 1;
    size_t i = (size_t)fnv1a(e->id) & mask;
    while (ht[i]) i = (i + 1) & mask;
    ht[i] = e;
}

/* ---- capacity accounting (lock held) ---- */

static void charge(ls_registry *r, entry *e, ls_mem bytes) {
    if (!e->counted) {
        e->counted = 1;
        r->count++;
    }
    assert(r->mem.host >= e->charged.host && r->mem.gpu >= e->charged.gpu);
    int shrink = bytes.host < e->charged.host || bytes.gpu < e->charged.gpu;
    r->mem.host += bytes.host - e->charged.host;
    r->mem.gpu += bytes.gpu - e->charged.gpu;
    e->charged = bytes;
    if (shrink) pthread_cond_broadcast(&r->cap_cond);
}

static void uncharge(ls_registry *r, entry *e) {
    if (e->counted) {
        e->counted = 0;
        r->count--;
    }
    assert(r->mem.host >= e->charged.host && r->mem.gpu >= e->charged.gpu);
    r->mem.host -= e->charged.host;
    r->mem.gpu -= e->charged.gpu;
    e->charged = (ls_mem){0, 0};
    pthread_cond_broadcast(&r->cap_cond);
}

/* Over a memory limit (host or GPU)? */
static int over_memory(const ls_registry *r) {
    return (r->lim.max_memory_bytes && r->mem.host > r->lim.max_memory_bytes) ||
           (r->lim.max_gpu_memory_bytes && r->mem.gpu > r->lim.max_gpu_memory_bytes);
}

static uint64_t activity_ns(const entry *e) { return ls_evict_activity(e->last_used_ns, e->loaded_ns); }

/* Held by neither a request nor a session. */
static int unpinned(const entry *e) { return e->refcount == 0 && e->sessions == 0; }

static int evictable(const entry *e, const entry *exclude) {
    return e != exclude && e->state == LS_STATE_LOADED && unpinned(e) && !e->pinned_config &&
           !e->unloading;
}

/* Every evictable entry as an evict.c candidate, into out (room for r->n). */
static int candidates(ls_registry *r, const entry *exclude, ls_evict_cand *out) {
    int nc = 0;
    for (int i = 0; i < r->n; i++) {
        entry *e = r->v[i];
        if (!evictable(e, exclude)) continue;
        ls_evict_cand *c = &out[nc++];
        memset(c, 0, sizeof *c);
        c->ref = e;
        c->charged = e->charged;
        c->last_use_ns = e->last_used_ns;
        c->loaded_ns = e->loaded_ns;
        c->uses = e->usage_count;
        c->freq = e->freq;
    }
    return nc;
}

/* Choose victims (evict.c) so that the charged capacity plus add_count /
 * add_mem, minus credit_count / credit_mem (capacity about to be freed by
 * retirements in progress), fits. On success out[0..k) are the victims and k
 * is returned; -1 when even evicting every allowed candidate is not enough.
 * out must hold r->n candidates. */
static int plan_victims(ls_registry *r, const entry *exclude, ls_evict_reason why, int add_count,
                        ls_mem add_mem, int credit_count, ls_mem credit_mem, ls_evict_cand *out) {
    ls_evict_need need = {
        .count = (int64_t)r->count + add_count - credit_count,
        .max_count = r->lim.max_models,
        .mem = {r->mem.host + add_mem.host - credit_mem.host, r->mem.gpu + add_mem.gpu - credit_mem.gpu},
        .max_mem = r->lim.max_memory_bytes,
        .max_gpu = r->lim.max_gpu_memory_bytes,
    };
    int nc = candidates(r, exclude, out);
    return ls_evict_select(&r->ep, now_ns(r), why, &need, out, nc);
}

/* Capacity held by retirements in progress (DRAINING, refcount 0, unloading). */
static void pending_retire(ls_registry *r, int *count, ls_mem *mem) {
    *count = 0;
    *mem = (ls_mem){0, 0};
    for (int i = 0; i < r->n; i++) {
        entry *e = r->v[i];
        if (e->unloading && e->counted) {
            (*count)++;
            mem->host += e->charged.host;
            mem->gpu += e->charged.gpu;
        }
    }
}

static void appendf(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void appendf(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    *len += (size_t)n;
    if (*len >= cap - 1) {
        *len = cap - 1;
        if (cap > 4) memcpy(buf + cap - 4, "...", 4);
    }
}

/* Requests holding or waiting for the entry (waiters of its load included;
 * sessions are not requests). */
static int in_flight(const entry *e) { return e->refcount + (e->fl ? e->fl->pins : 0); }

static int capacity_error(ls_registry *r, entry *e, ls_err *err) {
    char held[LS_ERR_MSG_MAX];
    size_t len = 0;
    held[0] = 0;
    int first = 1;
    uint64_t now = now_ns(r);
    for (int i = 0; i < r->n; i++) {
        entry *h = r->v[i];
        if (!h->counted) continue;
        appendf(held, sizeof held, &len, "%s%s (%s, %d in flight", first ? "" : ", ", h->id,
                ls_state_name(h->state), in_flight(h));
        if (h->sessions) appendf(held, sizeof held, &len, ", %d live session%s", h->sessions,
                                 h->sessions == 1 ? "" : "s");
        if (h->pinned_config) appendf(held, sizeof held, &len, ", pinned by config");
        if (h->state == LS_STATE_LOADED && ls_evict_guarded(&r->ep, now, h->loaded_ns))
            appendf(held, sizeof held, &len, ", loaded %.1fs ago < min_residency_seconds %.1f",
                    ns_to_s(now - h->loaded_ns), ns_to_s(r->lim.min_residency_ns));
        appendf(held, sizeof held, &len, ")");
        first = 0;
    }
    char mem[192] = "";
    size_t mlen = 0;
    if (r->lim.max_memory_bytes)
        appendf(mem, sizeof mem, &mlen, ", memory %llu/%llu bytes (needs %llu more)",
                (unsigned long long)r->mem.host, (unsigned long long)r->lim.max_memory_bytes,
                (unsigned long long)e->estimate.host);
    if (r->lim.max_gpu_memory_bytes && e->estimate.gpu)
        appendf(mem, sizeof mem, &mlen, ", GPU memory %llu/%llu bytes (needs %llu more)",
                (unsigned long long)r->mem.gpu, (unsigned long long)r->lim.max_gpu_memory_bytes,
                (unsigned long long)e->estimate.gpu);
    return ls_err_set(err, LS_RESOURCE_EXHAUSTED,
                      "cannot load model '%s': capacity full and eviction failed (models %d/%d%s); "
                      "held by: %s",
                      e->id, r->count, r->lim.max_models, mem, first ? "(none)" : held);
}

/* Mark e as being unloaded while keeping its charge (lock held). The caller
 * calls loader->unload(h) without the lock, then finish_retire(). */
static void *begin_retire(entry *e) {
    e->state = LS_STATE_DRAINING;
    e->unloading = 1;
    return e->handle;
}

static void finish_retire(ls_registry *r, entry *e) {
    e->state = LS_STATE_UNLOADED;
    e->handle = NULL;
    e->measured = (ls_mem){0, 0};
    e->loaded_wall = 0;
    e->unloading = 0;
    uncharge(r, e);
    pthread_cond_broadcast(&e->cond);
}

/* Unload retired victims outside the lock; returns with the lock held. */
static void unload_retired(ls_registry *r, victim *vs, int nv) {
    if (nv <= 0) return;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < nv; i++) r->loader.unload(r->loader.ctx, vs[i].e->id, vs[i].h);
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < nv; i++) finish_retire(r, vs[i].e);
}

/* ---- create / add / destroy ---- */

ls_registry *ls_registry_create(const ls_registry_limits *limits, const ls_loader *loader,
                                const ls_clock *clock) {
    if (!limits || !loader || !loader->load || !loader->unload) return NULL;
    ls_registry *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->lim = *limits;
    if (r->lim.max_models < 1) {
        LOG_WARN("registry: max_models %d < 1, using 1", r->lim.max_models);
        r->lim.max_models = 1;
    }
    if (!(r->lim.lfu_initial >= 0)) r->lim.lfu_initial = 0; /* also NaN */
    r->ep.policy = r->lim.policy;
    r->ep.half_life_ns = r->lim.lfu_half_life_ns;
    r->ep.min_residency_ns = r->lim.min_residency_ns;
    r->ep.idle_ns = r->lim.idle_unload_ns;
    r->loader = *loader;
    if (clock) r->clock = *clock;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    if (pthread_cond_init(&r->cap_cond, NULL) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return NULL;
    }
    return r;
}

int ls_registry_add(ls_registry *r, const ls_model_decl *decl, ls_err *err) {
    if (!decl || !decl->id || !decl->id[0])
        return ls_err_set(err, LS_INVALID_ARGUMENT, "model id must not be empty");
    size_t idlen = strnlen(decl->id, ID_MAX + 1);
    if (idlen > ID_MAX)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "model id '%.32s...' is longer than %d characters",
                          decl->id, ID_MAX);
    entry *e = calloc(1, sizeof *e);
    if (!e) return ls_err_set(err, LS_INTERNAL, "out of memory adding model '%s'", decl->id);
    memcpy(e->id, decl->id, idlen + 1);
    e->estimate = (ls_mem){decl->memory_estimate_bytes, decl->gpu_memory_estimate_bytes};
    e->pinned_config = decl->pinned ? 1 : 0;
    e->model_ctx = decl->model_ctx;
    e->max_in_flight = decl->max_in_flight;
    e->max_sessions = decl->max_sessions;
    e->state = LS_STATE_UNLOADED;
    if (pthread_cond_init(&e->cond, NULL) != 0) {
        free(e);
        return ls_err_set(err, LS_INTERNAL, "cannot create condition variable for '%s'", decl->id);
    }

    pthread_mutex_lock(&r->mu);
    entry *old = find_any(r, e->id);
    if (old && old->removed) {
        /* Re-added by a config reload: the old entry (and its statistics)
         * comes back with the new declaration. */
        old->removed = 0;
        old->estimate = (ls_mem){decl->memory_estimate_bytes, decl->gpu_memory_estimate_bytes};
        old->pinned_config = decl->pinned ? 1 : 0;
        old->model_ctx = decl->model_ctx;
        old->max_in_flight = decl->max_in_flight;
        old->max_sessions = decl->max_sessions;
        pthread_mutex_unlock(&r->mu);
        pthread_cond_destroy(&e->cond);
        free(e);
        return 0;
    }
    if (old) {
        pthread_mutex_unlock(&r->mu);
        pthread_cond_destroy(&e->cond);
        free(e);
        return ls_err_set(err, LS_INVALID_ARGUMENT, "model '%s' is declared twice", decl->id);
    }
    if (r->n == r->cap) {
        int ncap = r->cap ? r->cap * 2 : 16;
        entry **nv = realloc(r->v, (size_t)ncap * sizeof *nv);
        if (!nv) goto oom;
        r->v = nv;
        r->cap = ncap;
    }
    if ((size_t)(r->n + 1) * 2 > r->ht_cap) {
        size_t ncap = r->ht_cap ? r->ht_cap * 2 : 32;
        entry **nh = calloc(ncap, sizeof *nh);
        if (!nh) goto oom;
        for (int i = 0; i < r->n; i++) ht_put(nh, ncap, r->v[i]);
        free(r->ht);
        r->ht = nh;
        r->ht_cap = ncap;
    }
    r->v[r->n++] = e;
    ht_put(r->ht, r->ht_cap, e);
    pthread_mutex_unlock(&r->mu);
    return 0;
oom:
    pthread_mutex_unlock(&r->mu);
    pthread_cond_destroy(&e->cond);
    free(e);
    return ls_err_set(err, LS_INTERNAL, "out of memory adding model '%s'", decl->id);
}

void ls_registry_destroy(ls_registry *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        entry *e = r->v[i];
        if (e->handle) {
            r->loader.unload(r->loader.ctx, e->id, e->handle);
            e->handle = NULL;
        }
        if (e->fl && --e->fl->refs <= 0) free(e->fl);
        pthread_cond_destroy(&e->cond);
        free(e);
    }
    free(r->v);
    free(r->ht);
    pthread_cond_destroy(&r->cap_cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---- acquire / load ---- */

/* What obtain is for: a request's lease, an explicit load (forced or not),
 * a session's hold. M_ACQUIRE and M_SESSION pin what they get. */
enum { M_ACQUIRE, M_LOAD, M_FORCE, M_SESSION };

/* The eviction log line: the victim, its policy score and why. */
static void log_eviction(ls_registry *r, const entry *v, const ls_evict_cand *c, uint64_t now,
                         const char *for_id, const char *why) {
    LOG_INFO("evicting %s (policy %s, frequency %.3f, usage %lld, last used %.0fs ago, loaded "
             "%.0fs ago%s) to load %s%s",
             v->id, ls_policy_name(r->lim.policy), c->frequency, (long long)v->usage_count,
             ns_to_s(now - activity_ns(v)), ns_to_s(now - v->loaded_ns),
             c->guarded ? ", inside min_residency_seconds" : "", for_id, why);
}

static void fill_lease(ls_lease *lease, entry *e, int loaded_now, double load_ms) {
    if (!lease) return;
    lease->handle = e->handle;
    lease->loaded_now = loaded_now;
    lease->load_ms = loaded_now ? load_ms : 0;
    lease->entry_ = e;
}

static void flight_put(flight *f) {
    if (--f->refs == 0) free(f);
}

/* Wait (lock held) until flight f of e is done; the caller already counted
 * itself in f->refs. */
static void flight_wait(entry *e, flight *f, ls_registry *r) {
    while (!f->done) pthread_cond_wait(&e->cond, &r->mu);
}

static int obtain(ls_registry *r, const char *id, int mode, ls_lease *lease, int *already,
                  double *load_ms, ls_err *err) {
    if (lease) memset(lease, 0, sizeof *lease);
    if (already) *already = 0;
    if (load_ms) *load_ms = 0;
    if (!id) return ls_err_set(err, LS_INVALID_ARGUMENT, "model id is missing");

    pthread_mutex_lock(&r->mu);
    entry *e = find(r, id);
    if (!e) {
        pthread_mutex_unlock(&r->mu);
        return ls_err_set(err, LS_NOT_FOUND, "model '%.*s' is not configured", ID_MAX, id);
    }

    victim *vs = NULL; /* admission victims: unloaded before our load */
    int nv = 0;
    void *old = NULL;  /* force reload: previous handle */
    flight *f = NULL;

    for (;;) {
        if (e->unloading) {
            pthread_cond_wait(&e->cond, &r->mu);
            continue;
        }
        int holding = e->sessions + (e->fl ? e->fl->holds : 0);
        if (mode == M_SESSION && e->max_sessions > 0 && holding >= e->max_sessions) {
            int lim = e->max_sessions;
            pthread_mutex_unlock(&r->mu);
            return ls_err_set(err, LS_RESOURCE_EXHAUSTED,
                              "model '%s' already has %d live session%s (its max_sessions)", id, lim,
                              lim == 1 ? "" : "s");
        }
        switch (e->state) {
        case LS_STATE_LOADED:
            if (mode == M_FORCE) {
                if (e->refcount > 0) {
                    int n = e->refcount;
                    pthread_mutex_unlock(&r->mu);
                    return ls_err_set(err, LS_FAILED_PRECONDITION,
                                      "model '%s' has %d request%s in flight; cannot force a reload",
                                      e->id, n, n == 1 ? "" : "s");
                }
                if (e->sessions > 0) {
                    int n = e->sessions;
                    pthread_mutex_unlock(&r->mu);
                    return ls_err_set(err, LS_FAILED_PRECONDITION,
                                      "model '%s' has %d live session%s; cannot force a reload",
                                      e->id, n, n == 1 ? "" : "s");
                }
                f = calloc(1, sizeof *f);
                if (!f) {
                    pthread_mutex_unlock(&r->mu);
                    return ls_err_set(err, LS_INTERNAL, "out of memory reloading '%s'", e->id);
                }
                /* Keep the slot and the measured charge during the reload. */
                old = e->handle;
                e->handle = NULL;
                e->loaded_wall = 0;
                e->state = LS_STATE_LOADING;
                LOG_INFO("reloading model %s (forced)", e->id);
                goto start;
            }
            if (mode == M_ACQUIRE) {
                if (e->max_in_flight > 0 && e->refcount >= e->max_in_flight) {
                    int lim = e->max_in_flight;
                    pthread_mutex_unlock(&r->mu);
                    return ls_err_set(err, LS_RESOURCE_EXHAUSTED,
                                      "model '%s' already has %d requests in flight (its max_concurrent_requests)",
                                      id, lim);
                }
                e->refcount++;
                fill_lease(lease, e, 0, 0);
            } else if (mode == M_SESSION) {
                e->sessions++;
                e->sessions_total++;
                fill_lease(lease, e, 0, 0);
            } else if (already) {
                *already = 1;
            }
            pthread_mutex_unlock(&r->mu);
            return 0;

        case LS_STATE_DRAINING:
            pthread_mutex_unlock(&r->mu);
            return ls_err_set(err, LS_UNAVAILABLE, "model '%s' is being unloaded", e->id);

        case LS_STATE_LOADING: {
            flight *w = e->fl;
            w->refs++;
            if (mode == M_ACQUIRE) w->pins++;
            if (mode == M_SESSION) w->holds++;
            flight_wait(e, w, r);
            int rc = 0;
            if (w->ok) {
                /* An acquire- or session-waiter was pinned by the loader on success. */
                if (mode == M_ACQUIRE || mode == M_SESSION) {
                    fill_lease(lease, e, 1, w->load_ms);
                    lease->handle = w->handle;
                }
                if (load_ms) *load_ms = w->load_ms;
            } else {
                if (err) *err = w->err;
                rc = -1;
            }
            flight_put(w);
            pthread_mutex_unlock(&r->mu);
            return rc;
        }

        case LS_STATE_FAILED:
            if (mode != M_FORCE) {
                uint64_t now = now_ns(r), since = now - e->failed_ns;
                if (since < r->lim.load_retry_ns) {
                    /* whole seconds, rounded up: "retry in 0s" would be a lie */
                    unsigned long long left =
                        (r->lim.load_retry_ns - since + 999999999ull) / 1000000000ull;
                    ls_code code = e->fail.code;
                    char msg[LS_ERR_MSG_MAX];
                    memcpy(msg, e->fail.msg, sizeof msg);
                    pthread_mutex_unlock(&r->mu);
                    return ls_err_set(err, code, "model '%s' failed to load (retry in %llus): %s",
                                      e->id, left, msg);
                }
            }
            /* retry: */
            /* fallthrough */
        case LS_STATE_UNLOADED: {
            int host_big = r->lim.max_memory_bytes && e->estimate.host > r->lim.max_memory_bytes;
            if (host_big || (r->lim.max_gpu_memory_bytes && e->estimate.gpu > r->lim.max_gpu_memory_bytes)) {
                unsigned long long est = host_big ? e->estimate.host : e->estimate.gpu;
                unsigned long long lim = host_big ? r->lim.max_memory_bytes : r->lim.max_gpu_memory_bytes;
                pthread_mutex_unlock(&r->mu);
                return ls_err_set(err, LS_RESOURCE_EXHAUSTED,
                                  "model '%s' needs an estimated %llu %sbytes, more than "
                                  "%s (%llu): it can never be loaded",
                                  e->id, est, host_big ? "" : "GPU ",
                                  host_big ? "max_memory_bytes" : "max_gpu_memory_bytes", lim);
            }
            ls_evict_cand *cand = malloc((size_t)r->n * sizeof *cand);
            f = calloc(1, sizeof *f);
            if (!cand || !f) {
                free(cand);
                free(f);
                pthread_mutex_unlock(&r->mu);
                return ls_err_set(err, LS_INTERNAL, "out of memory loading '%s'", e->id);
            }
            int k = plan_victims(r, e, LS_EVICT_ADMIT, 1, e->estimate, 0, (ls_mem){0, 0}, cand);
            if (k < 0) {
                int pc;
                ls_mem pm;
                pending_retire(r, &pc, &pm);
                int k2 = pc ? plan_victims(r, e, LS_EVICT_ADMIT, 1, e->estimate, pc, pm, cand) : -1;
                free(cand);
                free(f);
                f = NULL;
                if (k2 >= 0) {
                    /* Fits once unloads in progress finish: wait for them. */
                    pthread_cond_wait(&r->cap_cond, &r->mu);
                    continue;
                }
                capacity_error(r, e, err);
                pthread_mutex_unlock(&r->mu);
                LOG_WARN("%s", err ? err->msg : "capacity full and eviction failed");
                return -1;
            }
            if (k > 0) {
                vs = malloc((size_t)k * sizeof *vs);
                if (!vs) {
                    free(cand);
                    free(f);
                    pthread_mutex_unlock(&r->mu);
                    return ls_err_set(err, LS_INTERNAL, "out of memory loading '%s'", e->id);
                }
                uint64_t now = now_ns(r);
                for (int i = 0; i < k; i++) {
                    entry *v = cand[i].ref;
                    log_eviction(r, v, &cand[i], now, e->id, "");
                    vs[nv].e = v;
                    vs[nv].h = v->handle;
                    nv++;
                    v->state = LS_STATE_UNLOADED;
                    v->handle = NULL;
                    v->measured = (ls_mem){0, 0};
                    v->loaded_wall = 0;
                    v->unloading = 1;
                    v->eviction_count++;
                    r->total_evictions++;
                    uncharge(r, v);
                }
            }
            free(cand);
            e->state = LS_STATE_LOADING;
            charge(r, e, e->estimate);
            goto start;
        }
        }
    }

start:
    /* We are the loader of e's flight f; e is LOADING and charged. */
    f->refs = 1;
    f->pins = mode == M_ACQUIRE ? 1 : 0;
    f->holds = mode == M_SESSION ? 1 : 0;
    e->fl = f;
    pthread_mutex_unlock(&r->mu);

    if (old) r->loader.unload(r->loader.ctx, e->id, old);
    if (nv) {
        for (int i = 0; i < nv; i++) r->loader.unload(r->loader.ctx, vs[i].e->id, vs[i].h);
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < nv; i++) {
            vs[i].e->unloading = 0;
            pthread_cond_broadcast(&vs[i].e->cond);
        }
        pthread_mutex_unlock(&r->mu);
    }
    free(vs);
    vs = NULL;
    nv = 0;

    ls_err lerr;
    memset(&lerr, 0, sizeof lerr);
    ls_mem mem = {0, 0};
    uint64_t t0 = now_ns(r);
    void *h = r->loader.load(r->loader.ctx, e->id, e->model_ctx, &mem, &lerr);
    uint64_t t1 = now_ns(r);
    double ms = (double)(t1 - t0) / 1e6;

    pthread_mutex_lock(&r->mu);
    e->fl = NULL;
    f->done = 1;
    if (!h) {
        if (lerr.code == LS_OK) {
            lerr.code = LS_INTERNAL;
            snprintf(lerr.msg, sizeof lerr.msg, "loader returned no handle for '%s'", e->id);
        }
        f->ok = 0;
        f->err = lerr;
        e->state = LS_STATE_FAILED;
        e->measured = (ls_mem){0, 0};
        e->has_fail = 1;
        e->fail = lerr;
        e->failed_ns = t1;
        r->total_load_failures++;
        uncharge(r, e);
        pthread_cond_broadcast(&e->cond);
        LOG_WARN("model %s failed to load (%s): %s", e->id, ls_code_name(lerr.code), lerr.msg);
        if (err) *err = lerr;
        flight_put(f);
        pthread_mutex_unlock(&r->mu);
        return -1;
    }

    f->ok = 1;
    f->handle = h;
    f->load_ms = ms;
    e->handle = h;
    e->state = LS_STATE_LOADED;
    e->measured = mem;
    e->refcount += f->pins;  /* the loader (if acquiring) and every acquire-waiter */
    e->sessions += f->holds; /* the loader (if holding) and every session-waiter */
    e->sessions_total += f->holds;
    e->has_fail = 0;
    e->load_count++;
    e->last_load_ms = ms;
    e->total_load_ms += ms;
    e->loaded_ns = t1;
    e->loaded_wall = now_wall(r);
    ls_freq_loaded(&e->freq, t1, r->lim.lfu_half_life_ns, r->lim.lfu_initial);
    r->total_loads++;
    charge(r, e, mem);
    pthread_cond_broadcast(&e->cond);
    LOG_INFO("loaded model %s in %.1f ms (%llu bytes measured, estimate %llu; GPU %llu, estimate %llu)", e->id, ms,
             (unsigned long long)mem.host, (unsigned long long)e->estimate.host, (unsigned long long)mem.gpu,
             (unsigned long long)e->estimate.gpu);

    if (mode == M_ACQUIRE || mode == M_SESSION) fill_lease(lease, e, 1, ms);
    if (load_ms) *load_ms = ms;
    flight_put(f);

    /* The measured size may push memory over the limit: evict others. */
    if (over_memory(r)) {
        ls_evict_cand *cand = malloc((size_t)r->n * sizeof *cand);
        int k = cand ? plan_victims(r, e, LS_EVICT_OVERRUN, 0, (ls_mem){0, 0}, 0, (ls_mem){0, 0}, cand) : -2;
        if (k > 0) vs = malloc((size_t)k * sizeof *vs);
        if (k > 0 && vs) {
            uint64_t now = now_ns(r);
            char why[128];
            snprintf(why, sizeof why, ": it measured %llu bytes (GPU %llu) over its estimate",
                     (unsigned long long)mem.host, (unsigned long long)mem.gpu);
            for (int i = 0; i < k; i++) {
                entry *v = cand[i].ref;
                log_eviction(r, v, &cand[i], now, e->id, why);
                v->eviction_count++;
                r->total_evictions++;
                vs[nv].e = v;
                vs[nv].h = begin_retire(v);
                nv++;
            }
        } else {
            LOG_WARN("model %s measured %llu bytes, GPU %llu (estimates %llu, %llu): memory %llu, GPU %llu "
                     "exceeds max_memory_bytes %llu or max_gpu_memory_bytes %llu and nothing can be evicted",
                     e->id, (unsigned long long)mem.host, (unsigned long long)mem.gpu,
                     (unsigned long long)e->estimate.host, (unsigned long long)e->estimate.gpu,
                     (unsigned long long)r->mem.host, (unsigned long long)r->mem.gpu,
                     (unsigned long long)r->lim.max_memory_bytes, (unsigned long long)r->lim.max_gpu_memory_bytes);
        }
        free(cand);
        unload_retired(r, vs, nv);
        free(vs);
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int ls_registry_acquire(ls_registry *r, const char *id, ls_lease *lease, ls_err *err) {
    return obtain(r, id, M_ACQUIRE, lease, NULL, NULL, err);
}

int ls_registry_load(ls_registry *r, const char *id, int force, int *already, double *load_ms,
                     ls_err *err) {
    return obtain(r, id, force ? M_FORCE : M_LOAD, NULL, already, load_ms, err);
}

int ls_registry_session_hold(ls_registry *r, const char *id, ls_session_hold *hold, ls_err *err) {
    ls_lease l;
    int rc = obtain(r, id, M_SESSION, &l, NULL, NULL, err);
    if (hold) {
        hold->handle = l.handle;
        hold->loaded_now = l.loaded_now;
        hold->load_ms = l.load_ms;
        hold->entry_ = l.entry_;
    }
    return rc;
}

/* ---- release / unload / sweep ---- */

/* The last pin of a DRAINING entry is gone: unload it (lock held; dropped
 * and retaken around the loader call). */
static void retire_if_drained(ls_registry *r, entry *e) {
    if (e->state == LS_STATE_DRAINING && unpinned(e) && !e->unloading) {
        victim v = {e, begin_retire(e)};
        LOG_INFO("unloading drained model %s", e->id);
        unload_retired(r, &v, 1);
    }
}

void ls_registry_release(ls_registry *r, ls_lease *lease, int ok, double inference_ms,
                         double composite_ms) {
    if (!lease || !lease->entry_) return;
    entry *e = lease->entry_;
    memset(lease, 0, sizeof *lease);
    uint64_t now = now_ns(r);
    int64_t wall = now_wall(r);

    pthread_mutex_lock(&r->mu);
    assert(e->refcount > 0);
    if (e->refcount > 0) e->refcount--;
    e->usage_count++;
    ls_freq_hit(&e->freq, now, r->lim.lfu_half_life_ns);
    if (now > e->last_used_ns) e->last_used_ns = now;
    e->last_used_wall = wall;
    r->total_requests++;
    if (ok) {
        e->ok_count++;
        e->total_inf_ms += inference_ms;
        e->total_comp_ms += composite_ms;
        e->ring[e->ring_pos] = inference_ms;
        e->ring_pos = (e->ring_pos + 1) % RING;
        if (e->ring_n < RING) e->ring_n++;
    } else {
        e->failed_requests++;
    }
    retire_if_drained(r, e);
    pthread_mutex_unlock(&r->mu);
}

void ls_registry_session_release(ls_registry *r, ls_session_hold *hold) {
    if (!hold || !hold->entry_) return;
    entry *e = hold->entry_;
    memset(hold, 0, sizeof *hold);
    uint64_t now = now_ns(r);
    pthread_mutex_lock(&r->mu);
    assert(e->sessions > 0);
    if (e->sessions > 0) e->sessions--;
    if (now > e->last_used_ns) e->last_used_ns = now; /* activity, not a use */
    retire_if_drained(r, e);
    pthread_mutex_unlock(&r->mu);
}

/* Unload e (lock held; may drop and retake it while waiting or unloading). */
static void unload_entry_locked(ls_registry *r, entry *e, ls_state *state_out) {
    if (state_out) *state_out = LS_STATE_UNLOADED;
    for (;;) {
        if (e->unloading) { /* someone is unloading it: wait for the outcome */
            pthread_cond_wait(&e->cond, &r->mu);
            continue;
        }
        switch (e->state) {
        case LS_STATE_UNLOADED:
            break;
        case LS_STATE_FAILED:
            e->state = LS_STATE_UNLOADED;
            e->has_fail = 0;
            memset(&e->fail, 0, sizeof e->fail);
            break;
        case LS_STATE_LOADING: { /* let the load finish, then unload its result */
            flight *w = e->fl;
            w->refs++;
            flight_wait(e, w, r);
            flight_put(w);
            continue;
        }
        case LS_STATE_DRAINING:
            if (state_out) *state_out = LS_STATE_DRAINING;
            break;
        case LS_STATE_LOADED:
            if (!unpinned(e)) {
                e->state = LS_STATE_DRAINING;
                if (state_out) *state_out = LS_STATE_DRAINING;
                LOG_INFO("draining model %s (%d in flight, %d live sessions)", e->id, e->refcount,
                         e->sessions);
            } else {
                victim v = {e, begin_retire(e)};
                LOG_INFO("unloading model %s", e->id);
                unload_retired(r, &v, 1);
            }
            break;
        }
        break;
    }
}

int ls_registry_unload(ls_registry *r, const char *id, ls_state *state_out, ls_err *err) {
    if (state_out) *state_out = LS_STATE_UNLOADED;
    pthread_mutex_lock(&r->mu);
    entry *e = find(r, id);
    if (!e) {
        pthread_mutex_unlock(&r->mu);
        return ls_err_set(err, LS_NOT_FOUND, "model '%.*s' is not configured", ID_MAX,
                          id ? id : "");
    }
    unload_entry_locked(r, e, state_out);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int ls_registry_update(ls_registry *r, const ls_model_decl *decl, ls_err *err) {
    pthread_mutex_lock(&r->mu);
    entry *e = find(r, decl->id);
    if (!e) {
        pthread_mutex_unlock(&r->mu);
        return ls_err_set(err, LS_NOT_FOUND, "model '%.*s' is not configured", ID_MAX, decl->id);
    }
    e->estimate = (ls_mem){decl->memory_estimate_bytes, decl->gpu_memory_estimate_bytes};
    e->pinned_config = decl->pinned ? 1 : 0;
    e->model_ctx = decl->model_ctx;
    e->max_in_flight = decl->max_in_flight;
    e->max_sessions = decl->max_sessions;
    /* What is loaded was built from the old declaration: let it go (after
     * its requests, if any) so the next use loads the new one. */
    unload_entry_locked(r, e, NULL);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int ls_registry_remove(ls_registry *r, const char *id, ls_err *err) {
    pthread_mutex_lock(&r->mu);
    entry *e = find(r, id);
    if (!e) {
        pthread_mutex_unlock(&r->mu);
        return ls_err_set(err, LS_NOT_FOUND, "model '%.*s' is not configured", ID_MAX, id ? id : "");
    }
    e->removed = 1; /* first, so no new request can take it while it drains */
    unload_entry_locked(r, e, NULL);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int ls_registry_sweep_idle(ls_registry *r) {
    if (!r->lim.idle_unload_ns) return 0;
    pthread_mutex_lock(&r->mu);
    ls_evict_cand *cand = r->n ? malloc((size_t)r->n * sizeof *cand) : NULL;
    victim *vs = r->n ? malloc((size_t)r->n * sizeof *vs) : NULL;
    int nv = 0;
    if (cand && vs) {
        uint64_t now = now_ns(r);
        int nc = candidates(r, NULL, cand);
        int k = ls_evict_select(&r->ep, now, LS_EVICT_IDLE, NULL, cand, nc);
        for (int i = 0; i < k; i++) {
            entry *e = cand[i].ref;
            LOG_INFO("auto-unloading idle %s (idle %.0fs, frequency %.3f)", e->id,
                     ns_to_s(now - activity_ns(e)), cand[i].frequency);
            r->total_idle_unloads++;
            e->idle_unload_count++;
            vs[nv].e = e;
            vs[nv].h = begin_retire(e);
            nv++;
        }
        unload_retired(r, vs, nv);
    }
    pthread_mutex_unlock(&r->mu);
    free(cand);
    free(vs);
    return nv;
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, int n, double p) {
    if (n <= 0) return 0;
    int idx = (int)(p * n + 0.999999999) - 1;
    if (idx < 0) idx = 0;
    if (idx >= n) idx = n - 1;
    return v[idx];
}

static void fill_stats(const ls_registry *r, const entry *e, uint64_t now, ls_entry_stats *s) {
    memset(s, 0, sizeof *s);
    memcpy(s->id, e->id, sizeof s->id);
    s->state = e->state;
    if (e->has_fail) snprintf(s->error, sizeof s->error, "%s", e->fail.msg);
    s->pinned_config = e->pinned_config;
    s->in_flight = in_flight(e);
    s->live_sessions = e->sessions;
    s->sessions_total = e->sessions_total;
    s->frequency = ls_freq_at(&e->freq, now, r->lim.lfu_half_life_ns);
    s->usage_count = e->usage_count;
    s->failed_requests = e->failed_requests;
    s->last_used_wall_ms = e->last_used_wall;
    int loaded = e->state == LS_STATE_LOADED || e->state == LS_STATE_DRAINING;
    s->loaded_wall_ms = loaded ? e->loaded_wall : 0;
    s->load_count = e->load_count;
    s->eviction_count = e->eviction_count;
    s->idle_unload_count = e->idle_unload_count;
    s->last_load_ms = e->last_load_ms;
    s->total_load_ms = e->total_load_ms;
    s->total_inference_ms = e->total_inf_ms;
    s->avg_inference_ms = e->ok_count ? e->total_inf_ms / (double)e->ok_count : 0;
    s->avg_composite_ms = e->ok_count ? e->total_comp_ms / (double)e->ok_count : 0;
    s->memory_estimate_bytes = e->estimate.host;
    s->memory_measured_bytes = loaded ? e->measured.host : 0;
    s->gpu_memory_estimate_bytes = e->estimate.gpu;
    s->gpu_memory_measured_bytes = loaded ? e->measured.gpu : 0;
}

int ls_registry_snapshot(ls_registry *r, const char *id, ls_entry_stats **out,
                         ls_registry_totals *totals, ls_err *err) {
    if (out) *out = NULL;
    pthread_mutex_lock(&r->mu);
    entry *one = NULL;
    if (id) {
        one = find(r, id);
        if (!one) {
            pthread_mutex_unlock(&r->mu);
            return ls_err_set(err, LS_NOT_FOUND, "model '%.*s' is not configured", ID_MAX, id);
        }
    }
    if (totals) {
        memset(totals, 0, sizeof *totals);
        totals->loaded_models = r->count;
        totals->max_models = r->lim.max_models;
        totals->memory_bytes = r->mem.host;
        totals->max_memory_bytes = r->lim.max_memory_bytes;
        totals->gpu_memory_bytes = r->mem.gpu;
        totals->max_gpu_memory_bytes = r->lim.max_gpu_memory_bytes;
        totals->policy = r->lim.policy;
        totals->total_requests = r->total_requests;
        totals->total_loads = r->total_loads;
        totals->total_load_failures = r->total_load_failures;
        totals->total_evictions = r->total_evictions;
        totals->total_idle_unloads = r->total_idle_unloads;
        int visible = 0;
        for (int i = 0; i < r->n; i++) visible += !r->v[i]->removed;
        totals->configured_models = visible;
    }
    /* The entries to report: one, or every entry still configured. */
    entry **sel = malloc((size_t)(r->n ? r->n : 1) * sizeof *sel);
    if (!sel) {
        pthread_mutex_unlock(&r->mu);
        return ls_err_set(err, LS_INTERNAL, "out of memory taking a registry snapshot");
    }
    int n = 0;
    if (one)
        sel[n++] = one;
    else
        for (int i = 0; i < r->n; i++)
            if (!r->v[i]->removed) sel[n++] = r->v[i];
    if (!out) {
        pthread_mutex_unlock(&r->mu);
        free(sel);
        return n;
    }
    ls_entry_stats *st = calloc(n ? (size_t)n : 1, sizeof *st);
    int *cnt = calloc(n ? (size_t)n : 1, sizeof *cnt);
    double *rings = NULL;
    size_t nvals = 0;
    for (int i = 0; i < n; i++) nvals += (size_t)sel[i]->ring_n;
    if (nvals) rings = malloc(nvals * sizeof *rings);
    if (!st || !cnt || (nvals && !rings)) {
        pthread_mutex_unlock(&r->mu);
        free(sel);
        free(st);
        free(cnt);
        free(rings);
        return ls_err_set(err, LS_INTERNAL, "out of memory taking a registry snapshot");
    }
    size_t off = 0;
    uint64_t now = now_ns(r);
    for (int i = 0; i < n; i++) {
        const entry *e = sel[i];
        fill_stats(r, e, now, &st[i]);
        cnt[i] = e->ring_n;
        if (e->ring_n) memcpy(rings + off, e->ring, (size_t)e->ring_n * sizeof *rings);
        off += (size_t)e->ring_n;
    }
    pthread_mutex_unlock(&r->mu);
    free(sel);

    off = 0;
    for (int i = 0; i < n; i++) {
        if (cnt[i]) {
            double *v = rings + off;
            qsort(v, (size_t)cnt[i], sizeof *v, cmp_double);
            st[i].p50_inference_ms = pct(v, cnt[i], 0.50);
            st[i].p99_inference_ms = pct(v, cnt[i], 0.99);
        }
        off += (size_t)cnt[i];
    }
    free(rings);
    free(cnt);
    *out = st;
    return n;
}

int ls_registry_inspect(ls_registry *r, const char *id, void (*fn)(void *handle, void *arg),
                        void *arg) {
    pthread_mutex_lock(&r->mu);
    entry *e = find(r, id);
    int rc = -1;
    if (e) {
        rc = 0;
        if (e->state == LS_STATE_LOADED && e->handle) {
            if (fn) fn(e->handle, arg);
            rc = 1;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}
