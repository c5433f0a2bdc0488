/* video.h - H.264 out: one encoder per stream of frames (a session).
 *
 * Why a subsystem of its own: an image format encodes each frame alone, so
 * the compositor's pool can encode frames in any order; a video encoder
 * carries state from frame to frame (the reference picture, the rate
 * control), so one stream needs one encoder fed in frame order. The model
 * layer converts composited frames to I420 in parallel and hands them here
 * one by one (model.h, LS_FORMAT_H264).
 *
 * The stream (OpenH264, BSD-2: docs/ARCHITECTURE.md has the measurement
 * against x264 and the licence reasoning):
 *   - Annex B, constrained baseline (profile 66, constraint_set0..2), CAVLC,
 *     one slice, one reference frame, no B-frames: every access unit decodes
 *     as soon as it arrives;
 *   - level 3.1 up to 1280x720 at 25 fps, else 4.0 (up to 2048x1088), else
 *     5.1; the WebCodecs codec string is "avc1.42E0" + the level (1F = 3.1);
 *   - SPS and PPS in band before every IDR; an IDR every keyframe_interval
 *     frames, and on request (ls_video_request_keyframe);
 *   - colour: BT.601 limited range (libyuv's I420), signalled in the SPS VUI
 *     (matrix, primaries and transfer 6 = SMPTE 170M, video_full_range 0);
 *   - rate control on the bitrate; never a skipped frame: the rate control
 *     may lower quality, it never drops a picture (a skip is an error here).
 *
 * Not thread-safe: one encoder, one caller at a time. */
#ifndef LS_VIDEO_H
#define LS_VIDEO_H

#include "common.h"

typedef struct {
    int width, height;        /* even, >= 16 */
    int fps;                  /* 25 */
    int bitrate_kbps;         /* target, LS_VIDEO_MIN_KBPS..LS_VIDEO_MAX_KBPS */
    int keyframe_interval;    /* frames between IDRs, 1..LS_VIDEO_MAX_KEYINT */
} ls_video_opts;

/* The options' ranges. */
#define LS_VIDEO_MIN_KBPS 100
#define LS_VIDEO_MAX_KBPS 50000
#define LS_VIDEO_MAX_KEYINT 1000

typedef struct ls_video ls_video;

/* Defaults a caller applies for an option left at 0. */
#define LS_VIDEO_DEFAULT_KBPS 2000
#define LS_VIDEO_DEFAULT_KEYINT 50

/* INVALID_ARGUMENT for options out of range (naming the option; callers
 * that take them from a client check the ranges first, in its terms),
 * INTERNAL when the encoder refuses its parameters. */
ls_video *ls_video_open(const ls_video_opts *o, ls_err *err);
void ls_video_close(ls_video *v);

/* The WebCodecs/RFC 6381 codec string of the stream, e.g. "avc1.42E01F". */
const char *ls_video_codec(const ls_video *v);

/* Bytes of an I420 picture of w x h: Y plane w*h, then U and V (w/2 x h/2). */
size_t ls_i420_bytes(int w, int h);

/* Make the next encoded frame an IDR (with SPS/PPS). */
void ls_video_request_keyframe(ls_video *v);

/* Encode the next frame (I420, ls_i420_bytes of the stream's size) into out
 * (appended): one access unit; *key = 1 for an IDR. INTERNAL if the encoder
 * fails or skips the frame. */
int ls_video_encode(ls_video *v, const uint8_t *i420, ls_buf *out, int *key, ls_err *err);

/* Frames encoded so far. */
int64_t ls_video_frames(const ls_video *v);

#endif
