/* pool.c - see pool.h.
 *
 * A loop is a job on a FIFO list; threads (the pool's and the caller) claim
 * item indices with an atomic counter, so the items of one job spread over
 * whoever is free. The caller waits until every item has finished and no
 * pool thread still holds the job. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct job {
    void (*fn)(void *, int);
    void *arg;
    int n;
    atomic_int next;   /* next unclaimed item */
    int done;          /* finished items, under g.lock */
    int helpers;       /* pool threads inside drain(), under g.lock: the
                        * owner must not return (the job is on its stack)
                        * while one of them may still touch it */
    pthread_cond_t finished;
    struct job *link;  /* queue */
} job;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    job *head, *tail;
    pthread_t *threads;
    int n_threads;
    int stopping;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER};

/* Run items of j until none is left unclaimed; returns how many ran. */
static int drain(job *j) {
    int ran = 0;
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n) break;
        j->fn(j->arg, i);
        ran++;
    }
    return ran;
}


static void unqueue_locked(job *j) {
    job **pp = &g.head;
    job *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->link;
    }
    if (!*pp) return;
    *pp = j->link;
    if (g.tail == j) g.tail = prev;
}

static void *thread_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&g.lock);
    for (;;) {
        while (!g.head && !g.stopping) pthread_cond_wait(&g.work, &g.lock);
        if (g.stopping) break;
        job *j = g.head;
        /* A job with nothing left to claim leaves the queue; its owner waits
         * for the items still running. */
        if (atomic_load(&j->next) >= j->n) {
            unqueue_locked(j);
            continue;
        }
        j->helpers++;
        pthread_mutex_unlock(&g.lock);
        int ran = drain(j);
        pthread_mutex_lock(&g.lock);
        j->done += ran;
        j->helpers--;
        if (j->done == j->n && j->helpers == 0) pthread_cond_signal(&j->finished);
    }
    pthread_mutex_unlock(&g.lock);
    return NULL;
}

int ls_pool_start(int threads) {
    if (threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 1 ? (int)c - 1 : 0;
    }
    if (threads == 0) return 0;
    g.threads = calloc((size_t)threads, sizeof *g.threads);
    if (!g.threads) return -1;
    g.stopping = 0;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&g.threads[i], NULL, thread_main, NULL) != 0) break;
        g.n_threads++;
    }
    return 0;
}

void ls_pool_stop(void) {
    pthread_mutex_lock(&g.lock);
    g.stopping = 1;
    pthread_cond_broadcast(&g.work);
    pthread_mutex_unlock(&g.lock);
    for (int i = 0; i < g.n_threads; i++) pthread_join(g.threads[i], NULL);
    free(g.threads);
    g.threads = NULL;
    g.n_threads = 0;
}

void ls_parallel_for(int n, void (*fn)(void *arg, int i), void *arg) {
    if (n <= 0) return;
    if (n == 1 || g.n_threads == 0) {
        for (int i = 0; i < n; i++) fn(arg, i);
        return;
    }
    job j = {.fn = fn, .arg = arg, .n = n};
    atomic_init(&j.next, 0);
    pthread_cond_init(&j.finished, NULL);
    pthread_mutex_lock(&g.lock);
    if (g.tail)
        g.tail->link = &j;
    else
        g.head = &j;
    g.tail = &j;
    pthread_cond_broadcast(&g.work);
    pthread_mutex_unlock(&g.lock);

    int ran = drain(&j);
    pthread_mutex_lock(&g.lock);
    unqueue_locked(&j); /* nothing left to claim: no thread may pick it up now */
    j.done += ran;
    while (j.done < j.n || j.helpers > 0) pthread_cond_wait(&j.finished, &g.lock);
    pthread_mutex_unlock(&g.lock);
    pthread_cond_destroy(&j.finished);
}
