/* bench_video.c - video out per frame, on one core (issue: video out, items
 * 1, 2 and 6): the H.264 encoder candidates and the image formats on the
 * same composited session frames, and the RGB -> I420 conversion of a whole
 * frame against that of the face band only.
 *
 *   bench_video FRAMES.rgb W H N Y1 Y2 KBPS
 *
 * FRAMES.rgb: N raw RGB24 frames W x H, in session order (bench_video.py
 * writes them from a raw StreamSession of the demo avatar). [Y1, Y2): the
 * rows the face rectangles cover. Each encoder gets the N frames in order,
 * at 25 fps and KBPS kbit/s, one thread. Output, one line each:
 *   NAME ms_per_frame kbit_per_s
 * for openh264 (lipsyncd's ls_video: RAW -> I420 + encode), x264 (same
 * conversion, then x264 "veryfast"/"ultrafast" tuned zerolatency, baseline,
 * no B-frames), jpeg_q90, and conv_full / conv_band (ms only).
 *
 * x264 is linked here to measure it, never into lipsyncd (GPL-2). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libyuv/convert.h>
#include <x264.h>

#include "image.h"
#include "video.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void to_i420(const uint8_t *rgb, int w, int h, uint8_t *yuv) {
    uint8_t *u = yuv + (size_t)w * h, *v = u + (size_t)(w / 2) * (h / 2);
    RAWToI420(rgb, w * 3, yuv, w, u, w / 2, v, w / 2, w, h);
}

static int bench_openh264(const uint8_t *frames, int w, int h, int n, int kbps, double *ms, double *rate) {
    ls_err err = {0};
    ls_video_opts o = {.width = w, .height = h, .fps = 25, .bitrate_kbps = kbps, .keyframe_interval = 50};
    ls_video *v = ls_video_open(&o, &err);
    if (!v) {
        fprintf(stderr, "openh264: %s\n", err.msg);
        return -1;
    }
    uint8_t *yuv = malloc(ls_i420_bytes(w, h));
    ls_buf au = {0};
    size_t bytes = 0;
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        int key;
        au.len = 0;
        to_i420(frames + (size_t)i * w * h * 3, w, h, yuv);
        if (ls_video_encode(v, yuv, &au, &key, &err) != 0) {
            fprintf(stderr, "openh264: %s\n", err.msg);
            return -1;
        }
        bytes += au.len;
    }
    *ms = (now_ms() - t0) / n;
    *rate = bytes * 8.0 / (n / 25.0) / 1000.0;
    ls_buf_free(&au);
    free(yuv);
    ls_video_close(v);
    return 0;
}

static int bench_x264(const char *preset, const uint8_t *frames, int w, int h, int n, int kbps, double *ms,
                      double *rate) {
    x264_param_t p;
    if (x264_param_default_preset(&p, preset, "zerolatency") < 0) return -1;
    p.i_threads = 1;
    p.i_width = w;
    p.i_height = h;
    p.i_csp = X264_CSP_I420;
    p.i_fps_num = 25;
    p.i_fps_den = 1;
    p.i_keyint_max = 50;
    p.b_repeat_headers = 1;
    p.b_annexb = 1;
    p.rc.i_rc_method = X264_RC_ABR;
    p.rc.i_bitrate = kbps;
    p.rc.i_vbv_max_bitrate = kbps;
    p.rc.i_vbv_buffer_size = kbps;
    if (x264_param_apply_profile(&p, "baseline") < 0) return -1;
    x264_t *enc = x264_encoder_open(&p);
    if (!enc) return -1;
    x264_picture_t pic, out;
    x264_picture_alloc(&pic, X264_CSP_I420, w, h);
    size_t bytes = 0;
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        const uint8_t *rgb = frames + (size_t)i * w * h * 3;
        RAWToI420(rgb, w * 3, pic.img.plane[0], pic.img.i_stride[0], pic.img.plane[1], pic.img.i_stride[1],
                  pic.img.plane[2], pic.img.i_stride[2], w, h);
        pic.i_pts = i;
        x264_nal_t *nal;
        int nn;
        int sz = x264_encoder_encode(enc, &nal, &nn, &pic, &out);
        if (sz < 0) return -1;
        bytes += (size_t)sz;
    }
    *ms = (now_ms() - t0) / n;
    *rate = bytes * 8.0 / (n / 25.0) / 1000.0;
    x264_picture_clean(&pic);
    x264_encoder_close(enc);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s FRAMES.rgb W H N Y1 Y2 KBPS\n", argv[0]);
        return 2;
    }
    int w = atoi(argv[2]), h = atoi(argv[3]), n = atoi(argv[4]), y1 = atoi(argv[5]), y2 = atoi(argv[6]);
    int kbps = atoi(argv[7]);
    size_t fb = (size_t)w * h * 3;
    uint8_t *frames = malloc(fb * (size_t)n);
    FILE *f = fopen(argv[1], "rb");
    if (!f || !frames || fread(frames, fb, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %d frames of %dx%d from %s\n", n, w, h, argv[1]);
        return 1;
    }
    fclose(f);
    double ms, rate;
    if (bench_openh264(frames, w, h, n, kbps, &ms, &rate) == 0) printf("openh264 %.3f %.0f\n", ms, rate);
    static const char *const presets[] = {"ultrafast", "veryfast"};
    for (int k = 0; k < 2; k++)
        if (bench_x264(presets[k], frames, w, h, n, kbps, &ms, &rate) == 0)
            printf("x264_%s %.3f %.0f\n", presets[k], ms, rate);

    ls_buf jpg = {0};
    ls_err err = {0};
    size_t bytes = 0;
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        jpg.len = 0;
        if (ls_jpeg_encode_rgb(frames + (size_t)i * fb, w, h, 90, &jpg, &err) != 0) return 1;
        bytes += jpg.len;
    }
    printf("jpeg_q90 %.3f %.0f\n", (now_ms() - t0) / n, bytes * 8.0 / (n / 25.0) / 1000.0);
    ls_buf_free(&jpg);

    /* Conversion: the whole frame, against the macroblock-aligned band. */
    uint8_t *yuv = malloc(ls_i420_bytes(w, h));
    int b0 = y1 & ~15, b1 = (y2 + 15) & ~15;
    if (b1 > h) b1 = h;
    t0 = now_ms();
    for (int i = 0; i < n; i++) to_i420(frames + (size_t)i * fb, w, h, yuv);
    printf("conv_full %.3f 0\n", (now_ms() - t0) / n);
    t0 = now_ms();
    for (int i = 0; i < n; i++) {
        const uint8_t *rgb = frames + (size_t)i * fb + (size_t)b0 * w * 3;
        uint8_t *y = yuv + (size_t)b0 * w, *u = yuv + (size_t)w * h + (size_t)(b0 / 2) * (w / 2);
        uint8_t *v = yuv + (size_t)w * h + (size_t)(w / 2) * (h / 2) + (size_t)(b0 / 2) * (w / 2);
        RAWToI420(rgb, w * 3, y, w, u, w / 2, v, w / 2, w, b1 - b0);
    }
    printf("conv_band %.3f 0\n", (now_ms() - t0) / n);
    free(yuv);
    free(frames);
    return 0;
}
