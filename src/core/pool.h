/* pool.h - a process-wide pool of threads for data-parallel loops.
 *
 * Compositing and encoding the frames of one batch are independent; running
 * them on every core cuts a request's latency. ls_parallel_for hands items
 * to the pool's threads and works on them itself too, so it makes progress
 * even when every pool thread is busy with other requests' loops. */
#ifndef LS_POOL_H
#define LS_POOL_H

/* Start `threads` helper threads (0 = number of cores - 1). Without a call,
 * ls_parallel_for runs every item in the calling thread. */
int ls_pool_start(int threads);
void ls_pool_stop(void);

/* Call fn(arg, i) for i in [0, n), in any order and on any threads; return
 * when all calls have returned. */
void ls_parallel_for(int n, void (*fn)(void *arg, int i), void *arg);

#endif
