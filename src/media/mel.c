/* mel.c - the mel feature recipe of mel.h with FFTW, and the window assembly.
 *
 * Why it is built this way:
 *   - FFTW's planner is not thread-safe but executing a finished plan on new
 *     arrays is, so one r2c plan of size 800 is made in ls_mel_init under a
 *     mutex and every call brings its own (FFTW-aligned) buffers. The plan is
 *     FFTW_ESTIMATE: FFTW_MEASURE timed the same here, and it may choose a
 *     different algorithm in each process, which changes the last bits of the
 *     features between server restarts; ESTIMATE gives the same bytes.
 *   - Single precision (fftwf): against a float64 numpy reference it stays
 *     within 6.1e-5 of the normalised features on 10 s of speech (double
 *     FFTW: 3.2e-5; the rest is the float mel sum and log10f), far inside
 *     the 1e-3 allowed, and its mel takes ~0.30 ms per second of audio
 *     against ~0.40 ms in double. -DLS_MEL_FFT_DOUBLE=1 builds the double
 *     path (libfftw3) for that comparison (bench/bench_audio.py --precision,
 *     docs/PERFORMANCE.md "Audio front end").
 *   - The mel basis is built once in double from the Slaney formulas and kept
 *     as one [lo, hi) range of non-zero weights per filter, so applying it
 *     touches ~400 weights per frame instead of 80 x 401.
 *   - Frames are made on the fly (pre-emphasis, zero padding and the window in
 *     one loop), so a call allocates only the two FFT buffers. */
#include "mel.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <fftw3.h>

#define NBINS (LS_MEL_NFFT / 2 + 1) /* 401 */
#define FMIN 55.0
#define FMAX 7600.0
#define PREEMPH 0.97f
#define PI 3.14159265358979323846

#if LS_MEL_FFT_DOUBLE
typedef double fft_real;
typedef fftw_complex fft_cplx;
typedef fftw_plan fft_plan;
#define FFT(name) fftw_##name
#else
typedef float fft_real;
typedef fftwf_complex fft_cplx;
typedef fftwf_plan fft_plan;
#define FFT(name) fftwf_##name
#endif

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_ready; /* 1 once g_plan, g_window and the basis are set */
static fft_plan g_plan;
static fft_real g_window[LS_MEL_NFFT];
/* Filter m has weights g_w[m][k] for k in [g_lo[m], g_hi[m]), zero elsewhere. */
static float g_w[LS_MEL_BINS][NBINS];
static int g_lo[LS_MEL_BINS], g_hi[LS_MEL_BINS];

/* Slaney's mel scale: linear below 1 kHz (3 f / 200), logarithmic above. */
static double hz_to_mel(double f) {
    return f < 1000.0 ? 3.0 * f / 200.0 : 15.0 + 27.0 * log(f / 1000.0) / log(6.4);
}
static double mel_to_hz(double m) {
    return m < 15.0 ? 200.0 * m / 3.0 : 1000.0 * exp((m - 15.0) * log(6.4) / 27.0);
}

static void build_basis(void) {
    double edge[LS_MEL_BINS + 2];
    double m0 = hz_to_mel(FMIN), m1 = hz_to_mel(FMAX);
    for (int i = 0; i < LS_MEL_BINS + 2; i++) edge[i] = mel_to_hz(m0 + (m1 - m0) * i / (LS_MEL_BINS + 1));
    for (int m = 0; m < LS_MEL_BINS; m++) {
        double left = edge[m], centre = edge[m + 1], right = edge[m + 2];
        double norm = 2.0 / (right - left);
        g_lo[m] = NBINS;
        g_hi[m] = 0;
        for (int k = 0; k < NBINS; k++) {
            double f = (double)k * LS_MEL_RATE / LS_MEL_NFFT;
            double up = (f - left) / (centre - left), down = (right - f) / (right - centre);
            double w = fmax(0.0, fmin(up, down)) * norm;
            g_w[m][k] = (float)w;
            if (w > 0) {
                if (k < g_lo[m]) g_lo[m] = k;
                g_hi[m] = k + 1;
            }
        }
        assert(g_lo[m] < g_hi[m]); /* every filter covers at least one bin at this n_fft */
    }
}

int ls_mel_init(ls_err *err) {
    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_ready)) {
        pthread_mutex_unlock(&g_lock);
        return 0;
    }
    fft_real *in = FFT(malloc)(sizeof(fft_real) * LS_MEL_NFFT);
    fft_cplx *out = FFT(malloc)(sizeof(fft_cplx) * NBINS);
    if (!in || !out) {
        FFT(free)(in);
        FFT(free)(out);
        pthread_mutex_unlock(&g_lock);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory planning the mel FFT");
    }
    g_plan = FFT(plan_dft_r2c_1d)(LS_MEL_NFFT, in, out, FFTW_ESTIMATE);
    FFT(free)(in);
    FFT(free)(out);
    if (!g_plan) {
        pthread_mutex_unlock(&g_lock);
        return ls_err_set(err, LS_INTERNAL, "FFTW could not plan a real FFT of size %d", LS_MEL_NFFT);
    }
    for (int i = 0; i < LS_MEL_NFFT; i++) /* periodic Hann */
        g_window[i] = (fft_real)(0.5 - 0.5 * cos(2.0 * PI * i / LS_MEL_NFFT));
    build_basis();
    atomic_store(&g_ready, 1);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

void ls_mel_cleanup(void) {
    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_ready)) {
        atomic_store(&g_ready, 0);
        FFT(destroy_plan)(g_plan);
        g_plan = NULL;
        FFT(cleanup)();
    }
    pthread_mutex_unlock(&g_lock);
}

size_t ls_mel_frames(size_t n) { return 1 + n / LS_MEL_HOP; }

/* Pre-emphasised sample i of the zero-padded signal (i may be out of range). */
static inline float emph(const float *x, size_t n, ptrdiff_t i) {
    if (i < 0 || (size_t)i >= n) return 0.0f;
    return i == 0 ? x[0] : x[i] - PREEMPH * x[i - 1];
}

int ls_mel_compute(const float *x, size_t n, float *out, ls_err *err) {
    return ls_mel_compute_range(x, n, 0, ls_mel_frames(n), out, err);
}

int ls_mel_compute_range(const float *x, size_t n, size_t first, size_t last, float *out, ls_err *err) {
    if (!atomic_load_explicit(&g_ready, memory_order_acquire))
        return ls_err_set(err, LS_FAILED_PRECONDITION, "mel features used before ls_mel_init");
    fft_real *in = FFT(malloc)(sizeof(fft_real) * LS_MEL_NFFT);
    fft_cplx *spec = FFT(malloc)(sizeof(fft_cplx) * NBINS);
    if (!in || !spec) {
        FFT(free)(in);
        FFT(free)(spec);
        return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for the mel FFT buffers");
    }
    assert(first <= last && last <= ls_mel_frames(n));
    float mag[NBINS];
    for (size_t t = first; t < last; t++) {
        /* Frame t covers padded samples [t*hop, t*hop + n_fft), i.e. signal
         * samples from t*hop - n_fft/2. */
        ptrdiff_t s0 = (ptrdiff_t)(t * LS_MEL_HOP) - LS_MEL_NFFT / 2;
        if (s0 >= 1 && (size_t)s0 + LS_MEL_NFFT <= n) {
            for (int j = 0; j < LS_MEL_NFFT; j++)
                in[j] = g_window[j] * (fft_real)(x[s0 + j] - PREEMPH * x[s0 + j - 1]);
        } else {
            for (int j = 0; j < LS_MEL_NFFT; j++) in[j] = g_window[j] * (fft_real)emph(x, n, s0 + j);
        }
        FFT(execute_dft_r2c)(g_plan, in, spec);
        for (int k = 0; k < NBINS; k++) mag[k] = (float)sqrt(spec[k][0] * spec[k][0] + spec[k][1] * spec[k][1]);
        float *row = out + (t - first) * LS_MEL_BINS;
        for (int m = 0; m < LS_MEL_BINS; m++) {
            float acc = 0;
            for (int k = g_lo[m]; k < g_hi[m]; k++) acc += g_w[m][k] * mag[k];
            float s = 20.0f * log10f(acc > 1e-5f ? acc : 1e-5f) - 20.0f;
            float v = 8.0f * (s + 100.0f) / 100.0f - 4.0f;
            row[m] = v < -4.0f ? -4.0f : v > 4.0f ? 4.0f : v;
        }
    }
    FFT(free)(in);
    FFT(free)(spec);
    return 0;
}

int ls_mel_window_count(size_t t, size_t *n, ls_err *err) {
    if (t < LS_MEL_WINDOW)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "audio too short: %zu mel frames, need at least %d", t,
                          LS_MEL_WINDOW);
    /* The reference's int((T - 16) / 80.0 * 25) + 2, in the same double arithmetic. */
    *n = (size_t)((double)(t - LS_MEL_WINDOW) / 80.0 * 25) + 2;
    return 0;
}

void ls_mel_windows(const float *mel, size_t t, size_t first, size_t count, float *out) {
    size_t n = 0;
    assert(t >= LS_MEL_WINDOW);
    assert(ls_mel_window_count(t, &n, NULL) == 0 && first + count <= n);
    (void)n;
    for (size_t k = first; k < first + count; k++) {
        size_t start = (LS_MEL_FPS * k) / LS_VIDEO_FPS; /* floor(3.2 k) in integers */
        if (start + LS_MEL_WINDOW > t) start = t - LS_MEL_WINDOW;
        float *w = out + (k - first) * LS_MEL_BINS * LS_MEL_WINDOW;
        for (int j = 0; j < LS_MEL_WINDOW; j++) {
            const float *row = mel + (start + (size_t)j) * LS_MEL_BINS;
            for (int m = 0; m < LS_MEL_BINS; m++) w[m * LS_MEL_WINDOW + j] = row[m];
        }
    }
}

void ls_feat_windows(const float *feat, size_t n, size_t first, size_t count, float *out) {
    assert(n >= 1 && first + count <= n + 2);
    const size_t rowsz = LS_FEAT_DIM * sizeof(float);
    for (size_t i = first; i < first + count; i++) {
        float *w = out + (i - first) * LS_FEAT_WINDOW * LS_FEAT_DIM;
        for (int j = 0; j < LS_FEAT_WINDOW; j++) {
            /* Row p of the padded array [feat[0], feat[0..n), feat[n-1]]. */
            ptrdiff_t p = (ptrdiff_t)i - LS_FEAT_WINDOW / 2 + j;
            float *dst = w + (size_t)j * LS_FEAT_DIM;
            if (p < 0 || (size_t)p >= n + 2) {
                memset(dst, 0, rowsz);
                continue;
            }
            size_t src = p == 0 ? 0 : (size_t)p > n ? n - 1 : (size_t)p - 1;
            memcpy(dst, feat + src * LS_FEAT_DIM, rowsz);
        }
    }
}

void ls_feat_windows_all(const float *feat, size_t n, float *out) { ls_feat_windows(feat, n, 0, n + 2, out); }
