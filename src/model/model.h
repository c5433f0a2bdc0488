/* model.h - a servable model: engine (ONNX Runtime session) + avatar
 * (background frames, crop rectangles) + how to paste (compositor options).
 *
 * This is the registry's loader payload: ls_model_load/ls_model_free are
 * what the registry calls to bring an id into memory and out again.
 * Engines are shared: avatars whose model_path names the same file, on the
 * same execution provider and settings, share one session, reference
 * counted, and its memory is charged to the first avatar that opened it. */
#ifndef LS_MODEL_H
#define LS_MODEL_H

#include "avatar.h"
#include "engine.h"

typedef struct ls_model ls_model;

/* What a model is made of and how it pastes: the caller's (the service fills
 * it from its configuration). Strings are borrowed for the call only. */
typedef struct {
    const char *id;              /* names the model in messages */
    const char *model_path;      /* the U-Net (ONNX), shared by path */
    const char *background_dir;  /* the avatar's frames */
    const char *crop_rects_path;
    int num_frames;              /* 0 = every frame found */
    ls_frame_order frame_order;
    int channel_bgr;             /* 1: the model's planes are B,G,R */
    int paste_margin;            /* pixels around the crop, 0..64 */
    ls_interp paste_interp;
    /* The server-built visual input (visual.h). */
    struct {
        int margin;
        int mask[4];             /* x, y, w, h for S = 320 */
        ls_interp interp;
        ls_cache_mode cache;
    } visual;
    const char *encoder_path;    /* audio encoder (ONNX); NULL = no speech in */
    ls_engine_opts engine;       /* provider of both sessions (U-Net and encoder) */
} ls_model_spec;

/* Load engine (or take a reference on a shared one) and avatar. mem->host:
 * the avatar's upper bound (frames as raw RGB) + engine growth of the
 * process (RSS delta while opening, at least the model file's size) when
 * this call opened the engine. mem->gpu, on CUDA: the device memory the
 * sessions took (NVML's reading before opening and after one warm-up run,
 * loads on a GPU serialised so they do not count each other; at least the
 * files' size, and only that when NVML is missing), else 0. png_level:
 * deflate level of the frames. */
ls_model *ls_model_load(const ls_model_spec *spec, int png_level, ls_mem *mem, ls_err *err);
void ls_model_free(ls_model *m);

const ls_engine *ls_model_engine(const ls_model *m);
const char *ls_model_id(const ls_model *m);
const ls_avatar *ls_model_avatar(const ls_model *m);

/* Whether the model keeps each frame's server-built visual input (the
 * spec's visual.cache, auto resolved), and the bytes that cache holds once
 * full (charged to the model in *mem_bytes at load). */
int ls_model_visual_cached(const ls_model *m);
uint64_t ls_model_visual_cache_bytes(const ls_model *m);

/* ---- speech in: the audio front end -----------------------------------------
 * 16 kHz mono samples (audio.h) -> mel features (mel.h) -> the model's audio
 * encoder, batched -> N encoder outputs of 512; the U-Net windows of the
 * N + 2 video frames are assembled from those on demand (a window is 32 KB,
 * so ten minutes of speech would be 480 MB at once). */
typedef struct {
    float *mel;          /* [mel_frames, 80] when asked, else NULL */
    size_t mel_frames;   /* T */
    float *feat;         /* [n_feat, 512] encoder outputs */
    size_t n_feat;       /* N */
    double mel_ms, encoder_ms;
} ls_speech;

/* Whether the model's spec named an audio encoder (what speech needs:
 * callers check first and say which setting is missing in their terms). */
int ls_model_has_encoder(const ls_model *m);

/* Features of samples[0..n) (16 kHz mono). Errors: FAILED_PRECONDITION when
 * the model has no audio encoder, INVALID_ARGUMENT "audio too short" under
 * 16 mel frames (~0.19 s), the encoder's failures. On success free *out
 * with ls_speech_free. */
int ls_model_speech(ls_model *m, const float *samples, size_t n, int want_mel, ls_speech *out, ls_err *err);
void ls_speech_free(ls_speech *s);

/* Run the model's audio encoder on count mel windows (count x 80 x 16
 * floats, as ls_mel_windows writes them) into out (count x 512). Errors as
 * ls_model_speech. */
int ls_model_encode(ls_model *m, const float *windows, size_t count, float *out, ls_err *err);

/* The U-Net windows of video frames [first, first + count) (of n_feat + 2)
 * into out: count x 32 x 16 x 16 floats. */
void ls_speech_windows(const ls_speech *s, size_t first, size_t count, float *out);

/* Number of distinct engine sessions open in the process (for statistics). */
int ls_model_open_engines(void);

typedef struct {
    /* server_visual: the request carries no visual tensor; the model builds
     * it from the avatar's frames (visual.h), visual/n_visual unused. */
    int server_visual;
    const float *visual;   /* batch * visual_per_frame */
    size_t n_visual;
    const float *audio;    /* batch * audio_per_frame, or one window */
    size_t n_audio;
    int batch;
    int64_t start_frame;   /* >= 0 */
    int png_level;
    ls_format format;      /* encoding of the returned frames */
    /* LS_FORMAT_H264: the stream's encoder (the caller's, one per stream),
     * fed the batch's frames in order; NULL otherwise. */
    struct ls_video *video;
    int jpeg_quality;      /* 1..100, for LS_FORMAT_JPEG */
    /* The caller already scanned the inputs for NaN/Inf (the service's
     * request decoder does it while copying): the first bad index of each,
     * or -1. Else 0 and the model scans them. */
    int finite_checked;
    ptrdiff_t visual_bad, audio_bad;
} ls_infer_req;

/* An input tensor the model refused, described for the caller to word: the
 * model knows the shapes, the caller how its client named and encoded the
 * tensor (so a message can count in the client's units). */
typedef enum { LS_INPUT_VISUAL = 0, LS_INPUT_AUDIO = 1 } ls_input;
typedef enum { LS_FAULT_NONE = 0, LS_FAULT_SIZE = 1, LS_FAULT_NON_FINITE = 2 } ls_fault_kind;
typedef struct {
    ls_fault_kind kind;
    ls_input input;
    int batch;             /* the request's */
    /* LS_FAULT_SIZE: floats one frame takes (the tensor must hold batch x
     * per_frame, or for audio also just per_frame: one window for all) and
     * the floats it held. */
    size_t per_frame, got;
    ptrdiff_t index;       /* LS_FAULT_NON_FINITE: the first NaN/Inf */
} ls_input_fault;

typedef struct {
    ls_buf *frames;        /* batch encoded frames; free with ls_infer_result_free */
    int n_frames;
    unsigned char *keyframes; /* per frame, 1 = decodes alone (every image format frame) */
    double input_ms;       /* building the visual input (server_visual), else 0 */
    double inference_ms;
    double composite_ms;   /* composite + encode */
    /* Set when ls_model_infer refused an input (kind != LS_FAULT_NONE); the
     * error then says the same in floats, naming "visual input" / "audio
     * input". Kept by ls_infer_result_free. */
    ls_input_fault fault;
} ls_infer_result;

/* Validate tensor sizes against the model (INVALID_ARGUMENT naming expected
 * and received counts) and finiteness of the inputs (INVALID_ARGUMENT naming
 * the first bad index), either refusal also described in res->fault; build
 * the visual input if the request has none (frame (start + i) in frame
 * order, cached per frame as 8-bit planes when the spec's visual.cache says
 * so; the float32 tensor is written once, by the pool), run the model, then
 * composite each predicted crop into frame (start + i) and encode it, the
 * frames spread over the thread pool (pool.h). */
int ls_model_infer(ls_model *m, const ls_infer_req *req, ls_infer_result *res, ls_err *err);
void ls_infer_result_free(ls_infer_result *res);

#endif
