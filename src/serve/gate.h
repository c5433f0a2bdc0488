/* gate.h - the render gate: which render goes first when live sessions and
 * offline work share the CPU.
 *
 * Why: a client that sends audio faster than real time (a file, a TTS
 * engine dumping a paragraph) or a RenderSpeech call can keep every core
 * busy and make paced sessions' frames late. A live frame has a deadline
 * (its audio's arrival + sessions.latency_budget_ms); offline work has none.
 * So every session batch and RenderSpeech batch passes this gate, in one of
 * two classes:
 *
 *   - LIVE starts at once;
 *   - OFFLINE starts only while no LIVE render is running.
 *
 * A render that has started is never interrupted: a live frame shares the
 * CPU at most with the offline batches already running, for the rest of
 * each. Offline work gets the capacity live work leaves, and none while live
 * work takes it all; without live work it runs as if there were no gate.
 * ls_gate_new(0) makes a gate that holds nothing back
 * (sessions.prioritize_live: false, the benchmark's peer).
 *
 * A session is OFFLINE while its audio runs more than LS_GATE_AHEAD_S ahead
 * of the wall clock since its start (ls_gate_class_of); it becomes LIVE again
 * once real time catches up. Thread-safe; knows nothing of models or gRPC. */
#ifndef LS_GATE_H
#define LS_GATE_H

#include <stdint.h>

#define LS_GATE_AHEAD_S 1.0

typedef enum { LS_GATE_LIVE = 0, LS_GATE_OFFLINE = 1 } ls_gate_class;

typedef struct ls_gate ls_gate;

typedef struct {
    int64_t renders[2]; /* renders started, by class */
    int64_t waits;      /* offline renders that had to wait */
    int running[2], waiting[2]; /* now, by class (only OFFLINE waits) */
} ls_gate_stats;

ls_gate *ls_gate_new(int enabled);
void ls_gate_free(ls_gate *g);

/* Around one render (render 1: counted in renders) or other work of the
 * class (a session's audio features, render 0): enter blocks as above;
 * leave must follow, same class. */
void ls_gate_enter(ls_gate *g, ls_gate_class c, int render);
void ls_gate_leave(ls_gate *g, ls_gate_class c);

/* Whether live work is about (a gate that is on, with a live render running
 * or one ended less than LS_GATE_RECENT_MS ago): offline work then goes in
 * single frames, so that a live render shares the CPU with at most one
 * offline frame each, not a batch. */
#define LS_GATE_RECENT_MS 250
int ls_gate_live_recent(ls_gate *g);

/* OFFLINE when audio_s of audio have arrived elapsed_s after the start and
 * audio_s > elapsed_s + LS_GATE_AHEAD_S. */
ls_gate_class ls_gate_class_of(double audio_s, double elapsed_s);

void ls_gate_stats_get(ls_gate *g, ls_gate_stats *out);

#endif
