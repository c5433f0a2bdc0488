/* registry.h - the multi-tenant model registry.
 *
 * Knows model ids, their states and usage, and the capacity; decides when to
 * load, evict and unload. It knows nothing of gRPC, ONNX Runtime or images:
 * loading is delegated to an injected loader, time to an injected clock, so
 * the unit tests drive it with fakes and no sleeps.
 *
 * Lifecycle of an entry:
 *
 *   UNLOADED --acquire/load--> LOADING --ok--> LOADED --unload, in use--> DRAINING
 *       ^                          |             |  \                        |
 *       |                          +--fail--> FAILED \--evict/idle/unload----+--> UNLOADED
 *       +------------------------------------------------ last lease released-+
 *
 * Concurrency contract:
 *  - One mutex guards the table; it is held only for lookups and bookkeeping,
 *    never across loader calls. A load runs with the lock released, so a slow
 *    load never stalls requests to other models.
 *  - Single flight: callers that find an entry LOADING wait on its condition
 *    variable; one load, every waiter gets its outcome. Waiters of a failed
 *    load get the same error; the entry is FAILED and later calls retry only
 *    after load_retry_ns (before that they get the stored error at once).
 *  - A lease pins the entry (refcount) for one request; a session hold pins
 *    it for a live session (a count of its own, so sessions are not requests
 *    in flight and max_in_flight does not apply to them). Pinned entries are
 *    never evicted nor idle-unloaded. unload of a pinned entry marks it
 *    DRAINING: new acquires get UNAVAILABLE, and the last release (lease or
 *    session) frees it.
 *  - Capacity (max_models, max_memory_bytes, max_gpu_memory_bytes) counts
 *    LOADED, LOADING and DRAINING entries. Memory is two budgets, host and
 *    GPU (ls_mem; a model on the CPU charges no GPU bytes). A LOADING entry
 *    is charged its estimates; once loaded, the loader's measured bytes
 *    replace them. To admit a load, unpinned LOADED entries are evicted by
 *    policy (evict.h: lru, lfu = decaying frequency, lfu_count = lifetime
 *    usage count) until every limit holds; config-pinned
 *    entries are never victims, nor are entries loaded less than
 *    min_residency_ns ago (the churn guard). If that is impossible the caller
 *    gets RESOURCE_EXHAUSTED "capacity full and eviction failed" naming the
 *    models holding the capacity and why each cannot go.
 *  - The loader's unload is called without the lock held.
 */
#ifndef LS_REGISTRY_H
#define LS_REGISTRY_H

#include "common.h"

typedef struct ls_registry ls_registry;

typedef enum {
    LS_STATE_UNLOADED = 0,
    LS_STATE_LOADING,
    LS_STATE_LOADED,
    LS_STATE_DRAINING,
    LS_STATE_FAILED,
} ls_state;

const char *ls_state_name(ls_state s); /* "unloaded", "loading", ... */

/* Loads and frees the heavy object behind a model id (engine + avatar in the
 * server, a fake in tests). Called without the registry lock; may run
 * concurrently for different ids. */
typedef struct {
    /* Return a handle (non-NULL) and the measured memory in *mem, or NULL
     * with err set (its code and message reach every waiter). */
    void *(*load)(void *ctx, const char *id, void *model_ctx, ls_mem *mem, ls_err *err);
    void (*unload)(void *ctx, const char *id, void *handle);
    void *ctx;
} ls_loader;

/* Injectable clock; NULL functions mean the real clocks (ls_mono_ns/ls_wall_ms). */
typedef struct {
    uint64_t (*mono_ns)(void *ctx);
    int64_t (*wall_ms)(void *ctx);
    void *ctx;
} ls_clock;

typedef struct {
    int max_models;             /* >= 1 */
    uint64_t max_memory_bytes;  /* 0 = no memory limit */
    uint64_t max_gpu_memory_bytes; /* 0 = no GPU memory limit */
    ls_policy policy;
    uint64_t idle_unload_ns;    /* 0 = never idle-unload */
    uint64_t load_retry_ns;     /* backoff after a failed load */
    uint64_t lfu_half_life_ns;  /* the frequency score halves this often; 0 = never */
    double lfu_initial;         /* score of a model just loaded (evict.h); 0 = none */
    uint64_t min_residency_ns;  /* churn guard: not a victim this soon after its load; 0 = off */
} ls_registry_limits;

typedef struct {
    const char *id;             /* copied */
    uint64_t memory_estimate_bytes;
    int pinned;                 /* never evicted nor idle-unloaded */
    void *model_ctx;            /* passed to loader->load; not owned */
    int max_in_flight;          /* > 0: acquires beyond this many concurrent leases get
                                 * RESOURCE_EXHAUSTED at once (one tenant cannot take every
                                 * worker); 0 = no limit */
    uint64_t gpu_memory_estimate_bytes; /* 0 for a model that runs on the CPU */
    int max_sessions;           /* > 0: session holds beyond this many (waiters of a load
                                 * included) get RESOURCE_EXHAUSTED; 0 = no limit */
} ls_model_decl;

/* The registry copies limits/loader/clock. Returns NULL on OOM. */
ls_registry *ls_registry_create(const ls_registry_limits *limits, const ls_loader *loader,
                                const ls_clock *clock);

/* Declare a model id (before serving). Duplicate id: -1 INVALID_ARGUMENT. */
int ls_registry_add(ls_registry *r, const ls_model_decl *decl, ls_err *err);

/* Unloads everything (waits for nothing: call when no lease and no session
 * hold is outstanding). */
void ls_registry_destroy(ls_registry *r);

/* A pinned model for the duration of one request. */
typedef struct {
    void *handle;        /* the loader's handle */
    int loaded_now;      /* this caller waited for the load that made it LOADED */
    double load_ms;      /* duration of that load when loaded_now, else 0 */
    void *entry_;        /* private */
} ls_lease;

/* Find id, loading it (single flight, evicting as needed) if not LOADED, and
 * pin it. Errors: NOT_FOUND (unknown id), UNAVAILABLE (draining),
 * RESOURCE_EXHAUSTED (capacity), the loader's code (failed load). */
int ls_registry_acquire(ls_registry *r, const char *id, ls_lease *lease, ls_err *err);

/* Unpin; records the use (usage_count, frequency, last use, timings when
 * ok). The last release of a DRAINING entry unloads it (in the calling
 * thread). */
void ls_registry_release(ls_registry *r, ls_lease *lease, int ok, double inference_ms,
                         double composite_ms);

/* A live session's hold on a model: like a lease it keeps the model loaded
 * (never a victim, never idle-unloaded) until released, but it is not a
 * request: it does not count in in_flight nor against max_in_flight, and
 * holding or releasing it is not a use (the session's requests, made with
 * acquire/release, are). The release counts as activity, so an idle unload
 * measures from the end of the last session. */
typedef struct {
    void *handle;        /* the loader's handle */
    int loaded_now;      /* this caller waited for the load that made it LOADED */
    double load_ms;
    void *entry_;        /* private */
} ls_session_hold;

/* Find id, loading it as acquire does, and hold it for a session. Errors as
 * for acquire, except that max_in_flight does not apply and max_sessions
 * does (RESOURCE_EXHAUSTED naming it). */
int ls_registry_session_hold(ls_registry *r, const char *id, ls_session_hold *hold, ls_err *err);

/* End the hold (no-op on a released hold). The last release of a DRAINING
 * entry unloads it, as for leases. */
void ls_registry_session_release(ls_registry *r, ls_session_hold *hold);

/* Explicit load: like acquire+release without counting a use. A LOADED model
 * is left as it is (*already = 1) unless force, which reloads it; force on a
 * model with requests in flight or live sessions is refused with
 * FAILED_PRECONDITION. A FAILED
 * model within load_retry_ns gets the stored error, except with force, which
 * retries at once. already and load_ms may be NULL. */
int ls_registry_load(ls_registry *r, const char *id, int force, int *already, double *load_ms,
                     ls_err *err);

/* Explicit unload. Unknown id: NOT_FOUND. Not loaded: success, nothing done.
 * In use: state DRAINING, *state_out = LS_STATE_DRAINING. LOADING: waits for
 * the load to finish, then unloads (DRAINING if its waiters hold leases).
 * FAILED: clears the failure (UNLOADED). Otherwise returns once unloaded. */
int ls_registry_unload(ls_registry *r, const char *id, ls_state *state_out, ls_err *err);

/* Config reload. update: a declared id gets a new declaration (estimate,
 * pinned, model_ctx); what is loaded is unloaded (drained first if in use)
 * so the next use loads the new one. remove: the id disappears (NOT_FOUND
 * from now on, absent from snapshots); a loaded model is unloaded, drained
 * first if in use. ls_registry_add of a removed id brings it back. */
int ls_registry_update(ls_registry *r, const ls_model_decl *decl, ls_err *err);
int ls_registry_remove(ls_registry *r, const char *id, ls_err *err);

/* Unload every unpinned (no lease, no session), not config-pinned LOADED
 * entry idle for longer than idle_unload_ns. Returns the number unloaded. */
int ls_registry_sweep_idle(ls_registry *r);

/* Statistics snapshot of one entry (copied under the lock). */
typedef struct {
    char id[129];
    ls_state state;
    char error[LS_ERR_MSG_MAX]; /* last load error, "" if none */
    int pinned_config;
    int in_flight;              /* leases held + acquires waiting on its load */
    int live_sessions;          /* session holds */
    int64_t sessions_total;     /* session holds granted, ever */
    double frequency;           /* the lfu score now (evict.h), whatever the policy */
    int64_t usage_count;
    int64_t failed_requests;
    int64_t last_used_wall_ms;  /* 0 = never */
    int64_t loaded_wall_ms;     /* 0 = not loaded */
    int64_t load_count;
    int64_t eviction_count;     /* unloaded to make room for another model */
    int64_t idle_unload_count;  /* unloaded by the idle sweep */
    double last_load_ms;
    double total_load_ms;
    double total_inference_ms;
    double avg_inference_ms;
    double p50_inference_ms;    /* over the last 1024 requests */
    double p99_inference_ms;
    double avg_composite_ms;
    uint64_t memory_estimate_bytes;
    uint64_t memory_measured_bytes; /* 0 when not loaded */
    uint64_t gpu_memory_estimate_bytes;
    uint64_t gpu_memory_measured_bytes; /* 0 when not loaded or on the CPU */
} ls_entry_stats;

typedef struct {
    int loaded_models;          /* LOADED + LOADING + DRAINING */
    int max_models;
    uint64_t memory_bytes;      /* charged bytes */
    uint64_t max_memory_bytes;
    uint64_t gpu_memory_bytes;  /* charged GPU bytes */
    uint64_t max_gpu_memory_bytes;
    ls_policy policy;
    int64_t total_requests;
    int64_t total_loads;
    int64_t total_load_failures;
    int64_t total_evictions;
    int64_t total_idle_unloads;
    int configured_models;
} ls_registry_totals;

/* id NULL: all entries in declaration order. Returns the number written to
 * *out (malloc'd array, caller frees), or -1 with NOT_FOUND for an unknown id.
 * totals may be NULL. */
int ls_registry_snapshot(ls_registry *r, const char *id, ls_entry_stats **out,
                         ls_registry_totals *totals, ls_err *err);

/* If id is LOADED, call fn(handle, arg) with the lock held and return 1;
 * return 0 when not loaded, -1 for an unknown id. fn must be quick and must
 * not call back into the registry (used to read a model's tensor info). */
int ls_registry_inspect(ls_registry *r, const char *id, void (*fn)(void *handle, void *arg),
                        void *arg);

#endif
