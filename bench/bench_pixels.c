/* bench_pixels.c - composite + PNG encode of 1280x720 frames, the server's
 * per-frame path, measured in-process (targets 1 and 2 of docs/PERFORMANCE.md).
 *
 *   bench_pixels --bg BG.png --pred PRED.f32 --rects "x1,y1,x2,y2;..." [options]
 *
 * BG.png: the background frame (any size; decoded with the project's decoder).
 * PRED.f32: one prediction, float32 planar R,G,B planes of P x P (values in
 * [0,1]); P is read from the file size.
 *
 * Modes:
 *   --mode single   (target 1) frames/s of
 *       spliced: what src/model/model.c frame_work does per frame: malloc the band,
 *                copy the background rows crossing the rectangle, ls_composite
 *                into them, ls_png_encode_spliced between the top/bottom
 *                segments built once per background (ls_png_segment_build,
 *                as src/media/avatar.c prepare does; their build time is reported
 *                separately), free.
 *       whole:   copy the whole background, ls_composite, ls_png_encode_rgb.
 *       jpeg, raw: the other output formats (copy the whole background,
 *                ls_composite, then ls_jpeg_encode_rgb at quality 90 or the
 *                RGB24 buffer itself), as src/model/model.c frame_whole.
 *     Every PNG of the first round is decoded again (libspng, via
 *     ls_image_decode_mem) and compared byte for byte with the expected
 *     composited frame (background copy + ls_composite on the full frame):
 *     the bench fails if one pixel differs. With --outdir the first PNG of
 *     each path and the expected raw RGB are written for an independent check.
 *   --mode batch    (target 2) wall time of a batch of --batch frames done
 *       one by one vs spread with ls_parallel_for over ls_pool_start(0).
 *
 * Output: human-readable lines and one final line "RESULT {json}". */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common.h"
#include "compositor.h"
#include "image.h"
#include "pngenc.h"
#include "pool.h"

#define MAX_RECTS 16

static void die(const char *what, const ls_err *err) {
    fprintf(stderr, "bench_pixels: %s: %s\n", what, err ? err->msg : strerror(errno));
    exit(1);
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- inputs ---- */

typedef struct {
    ls_image bg;
    float *pred;
    int P;
    ls_rect rects[MAX_RECTS];
    int n_rects;
    ls_composite_opts opts;
    int level;
    /* per rectangle: what a prepared avatar frame holds */
    ls_png_segment top[MAX_RECTS], bottom[MAX_RECTS];
    uint8_t *band[MAX_RECTS];
    double segment_build_ms; /* all rectangles' top+bottom, once */
} bench_in;

static float *read_pred(const char *path, int *P) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path, NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    long floats = n / 4;
    int p = 1;
    while ((long)(p + 1) * (p + 1) * 3 <= floats) p++;
    if ((long)p * p * 3 != floats || n % 4) {
        fprintf(stderr, "bench_pixels: %s: %ld bytes is not 3*P*P float32\n", path, n);
        exit(1);
    }
    float *v = malloc((size_t)n);
    if (!v || fread(v, 1, (size_t)n, f) != (size_t)n) die(path, NULL);
    fclose(f);
    *P = p;
    return v;
}

static int parse_rects(const char *s, ls_rect *r) {
    int n = 0;
    while (*s && n < MAX_RECTS) {
        int used = 0;
        if (sscanf(s, "%d,%d,%d,%d%n", &r[n].x1, &r[n].y1, &r[n].x2, &r[n].y2, &used) != 4) break;
        n++;
        s += used;
        if (*s == ';') s++;
    }
    return n;
}

/* What avatar.c prepare keeps for a frame: compressed rows above and below
 * the rectangle, raw rows crossing it. */
static void prepare_frames(bench_in *in) {
    ls_err err;
    size_t stride = (size_t)in->bg.w * 3;
    uint64_t t0 = ls_mono_ns();
    for (int k = 0; k < in->n_rects; k++) {
        ls_rect r = in->rects[k];
        size_t bytes = stride * (size_t)(r.y2 - r.y1);
        in->band[k] = malloc(bytes);
        if (!in->band[k]) die("malloc", NULL);
        memcpy(in->band[k], in->bg.rgb + stride * (size_t)r.y1, bytes);
        if (ls_png_segment_build(in->bg.rgb, in->bg.w, r.y1, stride, in->level, &in->top[k], &err) ||
            ls_png_segment_build(in->bg.rgb + stride * (size_t)r.y2, in->bg.w, in->bg.h - r.y2, stride,
                                 in->level, &in->bottom[k], &err))
            die("ls_png_segment_build", &err);
    }
    in->segment_build_ms = (double)(ls_mono_ns() - t0) / 1e6;
}

/* ---- the two per-frame paths ---- */

/* src/model/model.c frame_work, step for step (allocations included). */
static int frame_spliced(const bench_in *in, int k, ls_buf *out, ls_err *err) {
    int w = in->bg.w, h = in->bg.h;
    ls_rect r = in->rects[k];
    int rows = r.y2 - r.y1;
    size_t stride = (size_t)w * 3;
    uint8_t *band = malloc(stride * (size_t)rows);
    ls_buf scratch = {0};
    int rc;
    if (!band) {
        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        memcpy(band, in->band[k], stride * (size_t)rows);
        ls_rect local = {r.x1, 0, r.x2, rows};
        rc = ls_composite(band, w, rows, local, in->pred, &in->opts, &scratch, err);
        if (!rc) rc = ls_png_encode_spliced(w, h, &in->top[k], band, rows, stride, &in->bottom[k], in->level, out, err);
    }
    ls_buf_free(&scratch);
    free(band);
    return rc;
}

/* The plain path: the whole frame composited and encoded. */
static int frame_whole(const bench_in *in, int k, ls_buf *out, ls_err *err) {
    size_t bytes = (size_t)in->bg.w * 3 * (size_t)in->bg.h;
    uint8_t *frame = malloc(bytes);
    ls_buf scratch = {0};
    int rc;
    if (!frame) {
        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        memcpy(frame, in->bg.rgb, bytes);
        rc = ls_composite(frame, in->bg.w, in->bg.h, in->rects[k], in->pred, &in->opts, &scratch, err);
        if (!rc) rc = ls_png_encode_rgb(frame, in->bg.w, in->bg.h, (size_t)in->bg.w * 3, in->level, out, err);
    }
    ls_buf_free(&scratch);
    free(frame);
    return rc;
}

/* The other output formats, as src/model/model.c frame_whole does them: the
 * background copied whole, the prediction composited in, then JPEG
 * (libjpeg-turbo, the server's default quality 90) or the RGB24 copy as is. */
static int frame_other(const bench_in *in, int k, ls_buf *out, int jpeg, ls_err *err) {
    size_t bytes = (size_t)in->bg.w * 3 * (size_t)in->bg.h;
    ls_buf frame = {0};
    ls_buf scratch = {0};
    if (ls_buf_reserve(&frame, bytes) != 0) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(frame.data, in->bg.rgb, bytes);
    frame.len = bytes;
    int rc = ls_composite(frame.data, in->bg.w, in->bg.h, in->rects[k], in->pred, &in->opts, &scratch, err);
    ls_buf_free(&scratch);
    if (!rc && !jpeg) {
        *out = frame; /* taken over, as the server does */
        return 0;
    }
    if (!rc) rc = ls_jpeg_encode_rgb(frame.data, in->bg.w, in->bg.h, 90, out, err);
    ls_buf_free(&frame);
    return rc;
}
static int frame_jpeg(const bench_in *in, int k, ls_buf *out, ls_err *err) { return frame_other(in, k, out, 1, err); }
static int frame_raw(const bench_in *in, int k, ls_buf *out, ls_err *err) { return frame_other(in, k, out, 0, err); }

/* The spliced path without the encode: malloc + band copy + ls_composite
 * (the breakdown of where a frame's time goes). */
static int frame_composite_only(const bench_in *in, int k, ls_buf *out, ls_err *err) {
    int w = in->bg.w;
    ls_rect r = in->rects[k];
    int rows = r.y2 - r.y1;
    size_t stride = (size_t)w * 3;
    uint8_t *band = malloc(stride * (size_t)rows);
    ls_buf scratch = {0};
    int rc;
    if (!band) {
        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        memcpy(band, in->band[k], stride * (size_t)rows);
        ls_rect local = {r.x1, 0, r.x2, rows};
        rc = ls_composite(band, w, rows, local, in->pred, &in->opts, &scratch, err);
        out->len = band[stride * (size_t)rows / 2]; /* keep the work observable */
    }
    ls_buf_free(&scratch);
    free(band);
    return rc;
}

typedef int (*frame_fn)(const bench_in *, int, ls_buf *, ls_err *);

/* ---- verification ---- */

static uint8_t *expected_frame(const bench_in *in, int k) {
    size_t bytes = (size_t)in->bg.w * 3 * (size_t)in->bg.h;
    uint8_t *f = malloc(bytes);
    ls_buf scratch = {0};
    ls_err err;
    if (!f) die("malloc", NULL);
    memcpy(f, in->bg.rgb, bytes);
    if (ls_composite(f, in->bg.w, in->bg.h, in->rects[k], in->pred, &in->opts, &scratch, &err))
        die("ls_composite", &err);
    ls_buf_free(&scratch);
    return f;
}

/* Decode png and compare with the expected pixels; returns the number of
 * differing bytes (0 = exact). */
static long check_png(const ls_buf *png, const uint8_t *expect, int w, int h, const char *what) {
    ls_image img;
    ls_err err;
    if (ls_image_decode_mem(png->data, png->len, &img, &err) != 0) {
        fprintf(stderr, "bench_pixels: %s: our PNG does not decode: %s\n", what, err.msg);
        return -1;
    }
    long diff = 0;
    if (img.w != w || img.h != h) {
        fprintf(stderr, "bench_pixels: %s: decodes to %dx%d, expected %dx%d\n", what, img.w, img.h, w, h);
        diff = -1;
    } else {
        size_t n = (size_t)w * 3 * (size_t)h;
        for (size_t i = 0; i < n; i++) diff += img.rgb[i] != expect[i];
    }
    ls_image_free(&img);
    return diff;
}

static void write_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) die(path, NULL);
}

/* ---- single-frame mode (target 1) ---- */

typedef struct {
    double fps, ms_per_frame, cpu_fraction;
    double fps_cpu; /* frames per CPU-second of this process: per core, immune to other load */
    double mean_bytes;
    long mismatched_bytes;
} path_result;

/* Run fn over the rectangles for about `seconds`, `trials` times; the median
 * trial's frames/s. Round 0 is verified. */
static path_result run_path(const bench_in *in, frame_fn fn, const char *name, double seconds, int trials,
                            const char *outdir, int verify) {
    path_result res = {0};
    ls_err err;
    size_t bytes_total = 0;
    int frames_total = 0;
    /* verify first (also warms caches and the allocator) */
    for (int k = 0; verify && k < in->n_rects; k++) {
        ls_buf out = {0};
        if (fn(in, k, &out, &err)) die(name, &err);
        uint8_t *expect = expected_frame(in, k);
        long d = check_png(&out, expect, in->bg.w, in->bg.h, name);
        if (d != 0) res.mismatched_bytes += d < 0 ? 1 : d;
        if (outdir && k == 0) {
            char nm[256];
            snprintf(nm, sizeof nm, "ours_%s.png", name);
            write_file(outdir, nm, out.data, out.len);
            write_file(outdir, "expected.rgb", expect, (size_t)in->bg.w * 3 * (size_t)in->bg.h);
        }
        free(expect);
        ls_buf_free(&out);
    }
    double *fps = calloc((size_t)trials, sizeof *fps);
    double *cpu = calloc((size_t)trials, sizeof *cpu);
    double *fcpu = calloc((size_t)trials, sizeof *fcpu);
    for (int t = 0; t < trials; t++) {
        int n = 0;
        uint64_t t0 = ls_mono_ns();
        double c0 = cpu_seconds();
        uint64_t end = t0 + (uint64_t)(seconds * 1e9);
        do {
            ls_buf out = {0};
            if (fn(in, n % in->n_rects, &out, &err)) die(name, &err);
            bytes_total += out.len;
            ls_buf_free(&out);
            n++;
        } while (ls_mono_ns() < end);
        double wall = (double)(ls_mono_ns() - t0) / 1e9;
        fps[t] = n / wall;
        cpu[t] = (cpu_seconds() - c0) / wall;
        fcpu[t] = n / (cpu_seconds() - c0);
        frames_total += n;
    }
    res.fps = median(fps, trials);
    res.cpu_fraction = median(cpu, trials);
    res.fps_cpu = median(fcpu, trials);
    res.ms_per_frame = 1000.0 / res.fps_cpu;
    res.mean_bytes = (double)bytes_total / frames_total;
    free(fps);
    free(cpu);
    free(fcpu);
    return res;
}

/* ---- batch mode (target 2) ---- */

typedef struct {
    const bench_in *in;
    ls_buf *outs;
    int *rcs;
} batch_job;

static void batch_item(void *arg, int i) {
    batch_job *j = arg;
    ls_err err;
    j->rcs[i] = frame_spliced(j->in, i % j->in->n_rects, &j->outs[i], &err);
}

static double run_batch(const bench_in *in, int batch, int parallel) {
    ls_buf *outs = calloc((size_t)batch, sizeof *outs);
    int *rcs = calloc((size_t)batch, sizeof *rcs);
    batch_job j = {in, outs, rcs};
    uint64_t t0 = ls_mono_ns();
    if (parallel)
        ls_parallel_for(batch, batch_item, &j);
    else
        for (int i = 0; i < batch; i++) batch_item(&j, i);
    double ms = (double)(ls_mono_ns() - t0) / 1e6;
    for (int i = 0; i < batch; i++) {
        if (rcs[i]) {
            fprintf(stderr, "bench_pixels: batch item %d failed\n", i);
            exit(1);
        }
        ls_buf_free(&outs[i]);
    }
    free(outs);
    free(rcs);
    return ms;
}

int main(int argc, char **argv) {
    const char *bg_path = NULL, *pred_path = NULL, *rects = NULL, *mode = "single", *outdir = NULL;
    int margin = 4, level = 1, bgr = 0, trials = 3, batch = 10, rounds = 15;
    double seconds = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (!strcmp(a, name) && v && ++i)
        if (OPT("--bg")) bg_path = v;
        else if (OPT("--pred")) pred_path = v;
        else if (OPT("--rects")) rects = v;
        else if (OPT("--mode")) mode = v;
        else if (OPT("--outdir")) outdir = v;
        else if (OPT("--margin")) margin = atoi(v);
        else if (OPT("--level")) level = atoi(v);
        else if (OPT("--bgr")) bgr = atoi(v);
        else if (OPT("--trials")) trials = atoi(v);
        else if (OPT("--seconds")) seconds = atof(v);
        else if (OPT("--batch")) batch = atoi(v);
        else if (OPT("--rounds")) rounds = atoi(v);
        else {
            fprintf(stderr, "bench_pixels: unknown or incomplete option %s\n", a);
            return 2;
        }
#undef OPT
    }
    if (!bg_path || !pred_path || !rects) {
        fprintf(stderr, "usage: bench_pixels --bg BG.png --pred PRED.f32 --rects \"x1,y1,x2,y2;...\" "
                        "[--mode single|batch] [--margin M] [--level L] [--seconds S] [--trials T] "
                        "[--batch N] [--rounds R] [--outdir DIR]\n");
        return 2;
    }
    bench_in in = {0};
    ls_err err;
    if (ls_image_decode_file(bg_path, &in.bg, &err)) die(bg_path, &err);
    in.pred = read_pred(pred_path, &in.P);
    in.n_rects = parse_rects(rects, in.rects);
    if (in.n_rects < 1) {
        fprintf(stderr, "bench_pixels: no rectangles in --rects\n");
        return 2;
    }
    in.opts = (ls_composite_opts){.pred_size = in.P, .margin = margin, .bgr = bgr};
    in.level = level;
    prepare_frames(&in);
    int rw = in.rects[0].x2 - in.rects[0].x1, rh = in.rects[0].y2 - in.rects[0].y1;

    if (!strcmp(mode, "single")) {
        printf("frame %dx%d, prediction %dx%d -> rectangle %dx%d (%d positions), margin %d, level %d\n",
               in.bg.w, in.bg.h, in.P, in.P, rw, rh, in.n_rects, margin, level);
        printf("segments (top+bottom rows, built once per background frame): %.2f ms per frame\n",
               in.segment_build_ms / in.n_rects);
        path_result sp = run_path(&in, frame_spliced, "spliced", seconds, trials, outdir, 1);
        path_result wh = run_path(&in, frame_whole, "whole", seconds, trials, outdir, 1);
        path_result co = run_path(&in, frame_composite_only, "composite", seconds / 2, trials, NULL, 0);
        path_result jp = run_path(&in, frame_jpeg, "jpeg", seconds, trials, NULL, 0);
        path_result rw_ = run_path(&in, frame_raw, "raw", seconds, trials, NULL, 0);
        /* raw must be exactly the composited frame */
        {
            ls_buf raw = {0};
            if (frame_raw(&in, 0, &raw, &err)) die("raw", &err);
            uint8_t *expect = expected_frame(&in, 0);
            if (raw.len != (size_t)in.bg.w * 3 * (size_t)in.bg.h || memcmp(raw.data, expect, raw.len) != 0)
                rw_.mismatched_bytes = 1;
            free(expect);
            ls_buf_free(&raw);
        }
        printf("spliced (server path): %.1f frames/s per core (%.1f wall), %.2f ms/frame, %.0f bytes/frame, "
               "cpu %.2f, decode check: %s\n",
               sp.fps_cpu, sp.fps, sp.ms_per_frame, sp.mean_bytes, sp.cpu_fraction,
               sp.mismatched_bytes ? "MISMATCH" : "exact");
        printf("whole-frame encode   : %.1f frames/s per core (%.1f wall), %.2f ms/frame, %.0f bytes/frame, "
               "cpu %.2f, decode check: %s\n",
               wh.fps_cpu, wh.fps, wh.ms_per_frame, wh.mean_bytes, wh.cpu_fraction,
               wh.mismatched_bytes ? "MISMATCH" : "exact");
        printf("of which band copy + ls_composite: %.2f ms/frame; encode (filter + deflate + splice): %.2f ms/frame\n",
               co.ms_per_frame, sp.ms_per_frame - co.ms_per_frame);
        printf("jpeg (quality 90)    : %.1f frames/s per core (%.1f wall), %.2f ms/frame, %.0f bytes/frame\n",
               jp.fps_cpu, jp.fps, jp.ms_per_frame, jp.mean_bytes);
        printf("raw RGB24            : %.1f frames/s per core (%.1f wall), %.2f ms/frame, %.0f bytes/frame, check: %s\n",
               rw_.fps_cpu, rw_.fps, rw_.ms_per_frame, rw_.mean_bytes, rw_.mismatched_bytes ? "MISMATCH" : "exact");
        printf("RESULT {\"mode\":\"single\",\"composite_ms\":%.4f,\"w\":%d,\"h\":%d,\"pred\":%d,\"rect_w\":%d,\"rect_h\":%d,"
               "\"margin\":%d,\"level\":%d,\"segment_build_ms\":%.3f,"
               "\"spliced\":{\"fps\":%.3f,\"fps_wall\":%.3f,\"ms\":%.4f,\"bytes\":%.1f,\"cpu\":%.3f,\"mismatch\":%ld},"
               "\"whole\":{\"fps\":%.3f,\"fps_wall\":%.3f,\"ms\":%.4f,\"bytes\":%.1f,\"cpu\":%.3f,\"mismatch\":%ld},"
               "\"jpeg\":{\"fps\":%.3f,\"fps_wall\":%.3f,\"ms\":%.4f,\"bytes\":%.1f,\"quality\":90},"
               "\"raw\":{\"fps\":%.3f,\"fps_wall\":%.3f,\"ms\":%.4f,\"bytes\":%.1f,\"mismatch\":%ld}}\n",
               co.ms_per_frame, in.bg.w, in.bg.h, in.P, rw, rh, margin, level, in.segment_build_ms / in.n_rects, sp.fps_cpu,
               sp.fps, sp.ms_per_frame, sp.mean_bytes, sp.cpu_fraction, sp.mismatched_bytes, wh.fps_cpu, wh.fps, wh.ms_per_frame,
               wh.mean_bytes, wh.cpu_fraction, wh.mismatched_bytes, jp.fps_cpu, jp.fps, jp.ms_per_frame, jp.mean_bytes,
               rw_.fps_cpu, rw_.fps, rw_.ms_per_frame, rw_.mean_bytes, rw_.mismatched_bytes);
        return sp.mismatched_bytes || wh.mismatched_bytes || rw_.mismatched_bytes ? 1 : 0;
    }
    if (!strcmp(mode, "batch")) {
        if (ls_pool_start(0) != 0) die("ls_pool_start", NULL);
        double *seq = calloc((size_t)rounds, sizeof *seq), *par = calloc((size_t)rounds, sizeof *par);
        run_batch(&in, batch, 0); /* warm-up */
        run_batch(&in, batch, 1);
        for (int r = 0; r < rounds; r++) { /* interleaved, so drift hits both alike */
            seq[r] = run_batch(&in, batch, 0);
            par[r] = run_batch(&in, batch, 1);
        }
        double smin = seq[0], pmin = par[0];
        for (int r = 1; r < rounds; r++) {
            if (seq[r] < smin) smin = seq[r];
            if (par[r] < pmin) pmin = par[r];
        }
        double s = median(seq, rounds), p = median(par, rounds);
        printf("batch of %d (spliced path), %d rounds: one by one %.2f ms, ls_parallel_for %.2f ms, "
               "ratio %.3f\n",
               batch, rounds, s, p, p / s);
        printf("fastest rounds: one by one %.2f ms, ls_parallel_for %.2f ms, ratio %.3f\n", smin, pmin, pmin / smin);
        printf("RESULT {\"mode\":\"batch\",\"batch\":%d,\"rounds\":%d,\"sequential_ms\":%.3f,"
               "\"parallel_ms\":%.3f,\"ratio\":%.4f,\"sequential_min_ms\":%.3f,\"parallel_min_ms\":%.3f,"
               "\"ratio_min\":%.4f}\n",
               batch, rounds, s, p, p / s, smin, pmin, pmin / smin);
        ls_pool_stop();
        free(seq);
        free(par);
        return 0;
    }
    fprintf(stderr, "bench_pixels: unknown mode %s\n", mode);
    return 2;
}
