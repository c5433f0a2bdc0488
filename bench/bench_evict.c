/* bench_evict.c - eviction policies on a trace with shifting popularity.
 *
 * Why: the choice between lru, lfu_count and lfu (evict.h), and the churn
 * guard, is about which models are loaded when requests arrive, not about
 * speed. This replays one synthetic trace through the real registry with a
 * fake loader and an injected clock (no sleeps, no ONNX Runtime) and counts
 * loads and hits for every policy, so they are compared on the same
 * requests in the same run.
 *
 * Trace: 20 avatars, capacity 5 models. Requests arrive as a Poisson process
 * (mean `rate` per second of simulated time, default 2); each picks a popularity rank
 * from a Zipf distribution (exponent ZIPF_S) and the rank maps to an avatar
 * through an offset that moves by ROTATE_BY every ROTATE_MIN minutes, so the
 * popular set changes completely from one period to the next. A request is a
 * hit when its model was loaded already, a load otherwise, refused when the
 * registry answers RESOURCE_EXHAUSTED (the churn guard; nothing else holds a
 * model here, since requests do not overlap).
 *
 *   bench_evict [rotate_minutes [hours [seed [rate]]]]     defaults 5, 4, 1, 2
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evict.h"
#include "log.h"
#include "registry.h"

#define N_AVATARS 20
#define CAPACITY 5
#define ZIPF_S 1.0
#define ROTATE_BY 5

/* ---- injected clock and fake loader ---- */

static uint64_t g_now = 1000000000ull;

static uint64_t fk_mono(void *c) {
    (void)c;
    return g_now;
}
static int64_t fk_wall(void *c) {
    (void)c;
    return 1700000000000ll + (int64_t)(g_now / 1000000ull);
}

static int g_token; /* every handle points here: nothing is allocated */

static void *fk_load(void *ctx, const char *id, void *model_ctx, ls_mem *mem, ls_err *err) {
    (void)ctx, (void)id, (void)model_ctx, (void)err;
    *mem = (ls_mem){0, 0};
    return &g_token;
}
static void fk_unload(void *ctx, const char *id, void *handle) { (void)ctx, (void)id, (void)handle; }

/* ---- trace ---- */

/* xorshift64*: the same trace for every policy and every run of one seed. */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

typedef struct {
    uint64_t at_ns;
    int avatar;
} req;

static req *make_trace(double hours, double rotate_min, uint64_t seed, double rate, int *n_out) {
    double cdf[N_AVATARS], sum = 0;
    for (int k = 0; k < N_AVATARS; k++) sum += 1.0 / pow(k + 1, ZIPF_S);
    double acc = 0;
    for (int k = 0; k < N_AVATARS; k++) cdf[k] = (acc += 1.0 / pow(k + 1, ZIPF_S) / sum);
    int cap = (int)(hours * 3600 * rate * 1.2) + 64, n = 0;
    req *t = malloc((size_t)cap * sizeof *t);
    if (!t) return NULL;
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    double now_s = 0;
    for (;;) {
        now_s += -log(1.0 - rng_unit(&s)) / rate;
        if (now_s >= hours * 3600 || n == cap) break;
        double u = rng_unit(&s);
        int rank = 0;
        while (rank < N_AVATARS - 1 && u > cdf[rank]) rank++;
        int period = (int)(now_s / (rotate_min * 60));
        t[n].at_ns = (uint64_t)(now_s * 1e9);
        t[n].avatar = (rank + period * ROTATE_BY) % N_AVATARS;
        n++;
    }
    *n_out = n;
    return t;
}

/* ---- one policy over the trace ---- */

typedef struct {
    long requests, hits, loads, refused, evictions;
} result;

static int run(const req *t, int n, ls_policy pol, double min_res_s, result *out) {
    ls_registry_limits lim = {.max_models = CAPACITY,
                              .policy = pol,
                              .load_retry_ns = 1000000000ull,
                              .lfu_half_life_ns = 600ull * 1000000000ull, /* the defaults */
                              .lfu_initial = 5.0,
                              .min_residency_ns = (uint64_t)(min_res_s * 1e9)};
    ls_loader ld = {fk_load, fk_unload, NULL};
    ls_clock ck = {fk_mono, fk_wall, NULL};
    g_now = 1000000000ull;
    ls_registry *r = ls_registry_create(&lim, &ld, &ck);
    if (!r) return -1;
    for (int i = 0; i < N_AVATARS; i++) {
        char id[16];
        snprintf(id, sizeof id, "av%02d", i);
        ls_model_decl d = {.id = id};
        ls_err err;
        if (ls_registry_add(r, &d, &err) != 0) {
            ls_registry_destroy(r);
            return -1;
        }
    }
    memset(out, 0, sizeof *out);
    uint64_t base = g_now;
    for (int i = 0; i < n; i++) {
        g_now = base + t[i].at_ns;
        char id[16];
        snprintf(id, sizeof id, "av%02d", t[i].avatar);
        ls_lease l;
        ls_err err;
        out->requests++;
        if (ls_registry_acquire(r, id, &l, &err) == 0) {
            if (l.loaded_now)
                out->loads++;
            else
                out->hits++;
            ls_registry_release(r, &l, 1, 0, 0);
        } else if (err.code == LS_RESOURCE_EXHAUSTED) {
            out->refused++;
        } else {
            fprintf(stderr, "bench_evict: unexpected error: %s\n", err.msg);
            ls_registry_destroy(r);
            return -1;
        }
    }
    ls_registry_totals tot;
    ls_err err;
    ls_registry_snapshot(r, NULL, NULL, &tot, &err);
    out->evictions = (long)tot.total_evictions;
    ls_registry_destroy(r);
    return 0;
}

int main(int argc, char **argv) {
    double rotate_min = argc > 1 ? atof(argv[1]) : 5;
    double hours = argc > 2 ? atof(argv[2]) : 4;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    double rate = argc > 4 ? atof(argv[4]) : 2;
    if (!(rotate_min > 0) || !(hours > 0) || !(rate > 0) || hours * 3600 * rate > 1e8) {
        fprintf(stderr, "usage: bench_evict [rotate_minutes [hours [seed [rate]]]]\n");
        return 2;
    }
    ls_log_set_level(LS_LOG_ERROR); /* every refusal would log a warning */
    int n = 0;
    req *t = make_trace(hours, rotate_min, seed, rate, &n);
    if (!t) return 1;
    printf("trace: %d avatars, capacity %d, Zipf s=%.1f, %.1f req/s Poisson, popular set rotates by %d "
           "every %g min, %g h simulated, seed %llu: %d requests\n",
           N_AVATARS, CAPACITY, ZIPF_S, rate, ROTATE_BY, rotate_min, hours, (unsigned long long)seed,
           n);
    printf("lfu: half-life 10 min, lfu_initial 5 (the defaults)\n\n");
    printf("| policy | min_residency_seconds | loads | hit rate | refused | evictions |\n");
    printf("|---|---|---|---|---|---|\n");
    const ls_policy pols[3] = {LS_POLICY_LRU, LS_POLICY_LFU_COUNT, LS_POLICY_LFU};
    const double guards[2] = {0, 30};
    int rc = 0;
    for (int g = 0; g < 2; g++) {
        for (int p = 0; p < 3; p++) {
            result res;
            if (run(t, n, pols[p], guards[g], &res) != 0) {
                rc = 1;
                continue;
            }
            printf("| %s | %g | %ld | %.2f%% | %ld | %ld |\n", ls_policy_name(pols[p]), guards[g],
                   res.loads, 100.0 * (double)res.hits / (double)res.requests, res.refused,
                   res.evictions);
        }
    }
    free(t);
    return rc;
}
