/* engine.h - one ONNX Runtime session for a lip-sync model.
 *
 * A lip-sync model maps a visual tensor [N, 6, P, P] (3 channels of the real
 * face crop, 3 of the masked crop) and an audio tensor [N, A...] (one audio
 * window per frame, e.g. 32x16x16) to a face crop [N, 3, P, P]. Input and
 * output names and shapes are read from the model file, never assumed: the
 * visual input is the 4-D input with 6 channels, the audio input is the other
 * one. A model whose batch dimension is fixed (real opset-11 exports use 1)
 * still serves any batch: ls_engine_run splits it into chunks.
 *
 * All sessions share one process-wide ONNX Runtime environment with global
 * thread pools, so N loaded models do not mean N thread pools.
 *
 * Execution provider (ls_engine_opts): ONNX Runtime's CPU provider, or its
 * CUDA provider where the ONNX Runtime build has one (a GPU release pointed
 * at by ORT_ROOT). With CUDA the CPU provider takes only the nodes CUDA
 * cannot run. A build without it (the CPU release scripts/setup.sh fetches:
 * it lists CUDAExecutionProvider among its providers but ships no provider
 * library) fails when the provider is appended; ls_engine_provider_check
 * turns that into a message naming the providers and ORT_ROOT.
 *
 * Results do not depend on where the inputs lie: the same values give the
 * same bits at any address (an input not LS_TENSOR_ALIGN-aligned is copied
 * first; engine.c says why). Callers allocate with ls_alloc_aligned
 * or ls_tensor_alloc to skip the copy. */
#ifndef LS_ENGINE_H
#define LS_ENGINE_H

#include "common.h"

#define LS_MAX_DIMS 8

typedef struct {
    char name[128];
    int ndims;
    int64_t dims[LS_MAX_DIMS]; /* -1 = dynamic */
} ls_tensor_info;

typedef struct ls_engine ls_engine;

/* Process-wide setup; call once before ls_engine_open. intra/inter threads: 0
 * lets ONNX Runtime choose. */
int ls_engine_global_init(int intra_threads, int inter_threads, ls_err *err);
void ls_engine_global_shutdown(void);

/* Where and how a session runs. Zero-initialised = CPU, no IoBinding. */
typedef struct {
    ls_exec_provider provider;
    int device_id;                /* cuda: the GPU */
    uint64_t gpu_mem_limit;       /* cuda: arena cap in bytes; 0 = none (ORT's default) */
    ls_cudnn_search cudnn_search; /* cuda */
    int io_binding;               /* run through an OrtIoBinding bound to the caller's buffers */
} ls_engine_opts;

/* "cpu" or "cuda". */
const char *ls_engine_provider_name(ls_exec_provider p);

/* The providers this ONNX Runtime lists (GetAvailableProviders), joined by
 * ", ", into buf. */
void ls_engine_providers(char *buf, size_t size);

/* 0 when sessions can be created with opts's provider; else
 * FAILED_PRECONDITION: "CUDA execution provider unavailable in ONNX Runtime
 * <version>: <its reason>; it lists <providers> ...; set ORT_ROOT to ...". */
int ls_engine_provider_check(const ls_engine_opts *opts, ls_err *err);

/* Device memory in use on GPU device_id now, through NVML (libnvidia-ml,
 * loaded at run time: the CPU build needs neither it nor CUDA); -1 when
 * NVML or the device is not there. */
int64_t ls_engine_gpu_used_bytes(int device_id);

/* Open a model; opts NULL = the CPU provider without IoBinding. Errors:
 * FAILED_PRECONDITION naming the path and ORT's reason (the provider's
 * message as ls_engine_provider_check words it), or the shape rule the model
 * breaks. The providers the session got are logged. */
ls_engine *ls_engine_open(const char *path, const ls_engine_opts *opts, ls_err *err);
void ls_engine_close(ls_engine *e);

/* Shapes, read from the model. */
int ls_engine_pred_size(const ls_engine *e);        /* P, e.g. 320 */
size_t ls_engine_visual_per_frame(const ls_engine *e); /* 6*P*P floats */
size_t ls_engine_audio_per_frame(const ls_engine *e);  /* e.g. 32*16*16 floats */
size_t ls_engine_output_per_frame(const ls_engine *e); /* 3*P*P floats */
const ls_tensor_info *ls_engine_inputs(const ls_engine *e, int *n);  /* [visual, audio] */
const ls_tensor_info *ls_engine_outputs(const ls_engine *e, int *n);

/* Run `batch` frames. visual: batch * visual_per_frame floats; audio:
 * batch * audio_per_frame floats, or (audio_shared) one window used for every
 * frame; out: batch * output_per_frame floats, written in place (no copy).
 * Thread-safe: concurrent runs on one engine are allowed (ORT sessions are). */
int ls_engine_run(ls_engine *e, const float *visual, const float *audio, int audio_shared,
                  int batch, float *out, ls_err *err);

/* ---- audio encoder ----------------------------------------------------------
 * The "ave" audio encoder of SyncTalk_2D-style models: one mel window
 * [1, 80, 16] (or [80, 16]) in, 512 features out, per window; batched. Names
 * and shapes are read from the file; a fixed batch (real exports use 1) is
 * run in chunks. Same global environment and thread pools as the engine. */
typedef struct ls_encoder ls_encoder;

/* FAILED_PRECONDITION naming the file and the shape rule it breaks; opts as
 * for ls_engine_open. */
ls_encoder *ls_encoder_open(const char *path, const ls_engine_opts *opts, ls_err *err);
void ls_encoder_close(ls_encoder *e);

/* batch windows of 80 x 16 floats in, batch x 512 floats out (written in
 * place). Thread-safe like ls_engine_run. */
int ls_encoder_run(ls_encoder *e, const float *in, int batch, float *out, ls_err *err);

#endif
