/* speech.c - the incremental audio front end (see speech.h for what is final
 * when, and why that makes a session's frames exact). */
#include "speech.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "mel.h"

struct ls_speech_stream {
    ls_model *m;
    /* Samples [x_base, x_base + x_len) of the speech; x_base is a multiple
     * of the hop and stays 3 frames behind the next mel frame, so every frame
     * still to compute sees the same samples (and the same pre-emphasis) as
     * over the whole speech. */
    float *x;
    size_t x_base, x_len, x_cap;
    float *mel;          /* [t_fin, 80]: frames computed */
    size_t t_fin, mel_cap;
    float *feat;         /* [k_done, 512]: encoder outputs */
    size_t k_done, feat_cap;
    size_t taken;        /* frames handed out */
    size_t total;        /* after finish: N + 2 */
    int finished;
};

ls_speech_stream *ls_speech_stream_new(ls_model *m) {
    assert(ls_model_has_encoder(m));
    ls_speech_stream *s = calloc(1, sizeof *s);
    if (s) s->m = m;
    return s;
}

void ls_speech_stream_free(ls_speech_stream *s) {
    if (!s) return;
    free(s->x);
    free(s->mel);
    free(s->feat);
    free(s);
}

/* Room for `need` floats in *buf of capacity *cap (doubling). */
static int grow(float **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    float *b = realloc(*buf, c * sizeof *b);
    if (!b) return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* Mel frames [t_fin, upto) from the samples held (upto - x_base/hop frames
 * of the held signal; see the x_base invariant). */
static int mel_upto(ls_speech_stream *s, size_t upto, ls_err *err) {
    if (upto <= s->t_fin) return 0;
    if (grow(&s->mel, &s->mel_cap, upto * LS_MEL_BINS) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu mel frames", upto);
    size_t b = s->x_base / LS_MEL_HOP;
    assert(b == 0 || s->t_fin >= b + 3);
    if (ls_mel_compute_range(s->x, s->x_len, s->t_fin - b, upto - b, s->mel + s->t_fin * LS_MEL_BINS, err) != 0)
        return -1;
    s->t_fin = upto;
    return 0;
}

/* Encoder outputs [k_done, upto) from the mel frames computed, t mel frames
 * in all (the clamp of the last windows needs it at the end). */
static int encode_upto(ls_speech_stream *s, size_t upto, size_t t, ls_err *err) {
    if (upto <= s->k_done) return 0;
    size_t count = upto - s->k_done;
    float *win = ls_alloc_aligned(count * LS_MEL_BINS * LS_MEL_WINDOW * sizeof(float));
    if (!win || grow(&s->feat, &s->feat_cap, upto * LS_FEAT_DIM) != 0) {
        free(win);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu encoder windows", upto);
    }
    ls_mel_windows(s->mel, t, s->k_done, count, win);
    int rc = ls_model_encode(s->m, win, count, s->feat + s->k_done * LS_FEAT_DIM, err);
    free(win);
    if (!rc) s->k_done = upto;
    return rc;
}

/* Drop samples no frame still to compute reads (keeping x_base's invariant). */
static void trim(ls_speech_stream *s) {
    if (s->t_fin < 3) return;
    size_t base = (s->t_fin - 3) * LS_MEL_HOP;
    if (base <= s->x_base + 16 * LS_MEL_HOP) return; /* drop in steps, not per chunk */
    size_t drop = base - s->x_base;
    memmove(s->x, s->x + drop, (s->x_len - drop) * sizeof *s->x);
    s->x_len -= drop;
    s->x_base = base;
}

int ls_speech_stream_push(ls_speech_stream *s, const float *x, size_t n, ls_err *err) {
    assert(!s->finished);
    if (grow(&s->x, &s->x_cap, s->x_len + n) != 0)
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for %zu samples", s->x_len + n);
    memcpy(s->x + s->x_len, x, n * sizeof *x);
    s->x_len += n;
    size_t total = s->x_base + s->x_len;
    /* Frames t with t*hop + n_fft/2 <= total samples are final. */
    size_t t = total >= LS_MEL_NFFT / 2 ? (total - LS_MEL_NFFT / 2) / LS_MEL_HOP + 1 : 0;
    if (mel_upto(s, t, err) != 0) return -1;
    /* Windows whose 16 rows are final (and so never clamped). */
    size_t k = s->k_done;
    while ((LS_MEL_FPS * k) / LS_VIDEO_FPS + LS_MEL_WINDOW <= s->t_fin) k++;
    if (encode_upto(s, k, s->t_fin, err) != 0) return -1;
    trim(s);
    return 0;
}

int ls_speech_stream_finish(ls_speech_stream *s, ls_err *err) {
    assert(!s->finished);
    size_t total = s->x_base + s->x_len;
    size_t T = ls_mel_frames(total), N = 0;
    if (mel_upto(s, T, err) != 0) return -1;
    if (ls_mel_window_count(T, &N, err) != 0) return -1;
    assert(N >= s->k_done);
    if (encode_upto(s, N, T, err) != 0) return -1;
    s->total = N + 2;
    s->finished = 1;
    return 0;
}

size_t ls_speech_stream_ready(const ls_speech_stream *s) {
    /* Frame i needs padded row i + 7 = encoder output i + 6; at the end,
     * every frame of the N + 2. */
    size_t upto = s->finished ? s->total : s->k_done >= 7 ? s->k_done - 7 : 0;
    return upto > s->taken ? upto - s->taken : 0;
}

size_t ls_speech_stream_taken(const ls_speech_stream *s) { return s->taken; }
size_t ls_speech_stream_total(const ls_speech_stream *s) { return s->total; }
size_t ls_speech_stream_samples(const ls_speech_stream *s) { return s->x_base + s->x_len; }

void ls_speech_stream_take(ls_speech_stream *s, size_t count, float *out) {
    assert(count <= ls_speech_stream_ready(s));
    /* Before the end only rows <= k_done of the padded outputs are read, so
     * passing k_done as the output count changes nothing (the end rows are
     * never touched); after it, N. */
    ls_feat_windows(s->feat, s->k_done, s->taken, count, out);
    s->taken += count;
}
