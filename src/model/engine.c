/* engine.c - ONNX Runtime C API wrapper. See engine.h. */
#define _GNU_SOURCE
#include "engine.h"

#include <dlfcn.h>
#include <onnxruntime_c_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const OrtApi *ort;
static OrtEnv *g_env;
static OrtMemoryInfo *g_cpu_mem;

struct ls_engine {
    OrtSession *session;
    char *path;
    ls_engine_opts opts;
    ls_tensor_info in[2];  /* [0] visual, [1] audio, in our order */
    ls_tensor_info out;
    int in_index[2];       /* positions of visual/audio in the model's input list */
    const char *in_names[2];
    const char *out_names[1];
    int pred_size;
    int fixed_batch;       /* 0 = dynamic */
    size_t visual_per_frame, audio_per_frame, output_per_frame;
};

/* Turn an OrtStatus into an ls_err and release it. Returns -1 on error. */
static int check(OrtStatus *st, ls_err *err, ls_code code, const char *what) {
    if (!st) return 0;
    ls_err_set(err, code, "%s: %s", what, ort->GetErrorMessage(st));
    ort->ReleaseStatus(st);
    /* ONNX Runtime's messages may end in (or hold) line breaks; the message
     * becomes one log line and a gRPC status. */
    if (err) {
        size_t n = strlen(err->msg);
        while (n && (unsigned char)err->msg[n - 1] <= ' ') err->msg[--n] = 0;
        for (char *c = err->msg; *c; c++)
            if ((unsigned char)*c < ' ' || *c == 0x7f) *c = ' ';
    }
    return -1;
}

int ls_engine_global_init(int intra_threads, int inter_threads, ls_err *err) {
    if (g_env) return 0;
    const OrtApiBase *base = OrtGetApiBase();
    ort = base->GetApi(ORT_API_VERSION);
    if (!ort)
        return ls_err_set(err, LS_INTERNAL,
                          "ONNX Runtime %s does not provide API version %d (build headers)",
                          base->GetVersionString(), ORT_API_VERSION);
    OrtThreadingOptions *to = NULL;
    if (check(ort->CreateThreadingOptions(&to), err, LS_INTERNAL, "ORT threading options"))
        return -1;
    int rc = 0;
    if (intra_threads > 0)
        rc |= check(ort->SetGlobalIntraOpNumThreads(to, intra_threads), err, LS_INTERNAL, "intra threads");
    if (!rc && inter_threads > 0)
        rc |= check(ort->SetGlobalInterOpNumThreads(to, inter_threads), err, LS_INTERNAL, "inter threads");
    /* Spinning threads burn a core each between requests; a server that also
     * composites and encodes on the same cores is better off without it. */
    if (!rc) rc |= check(ort->SetGlobalSpinControl(to, 0), err, LS_INTERNAL, "spin control");
    if (!rc)
        rc |= check(ort->CreateEnvWithGlobalThreadPools(ORT_LOGGING_LEVEL_WARNING, "lipsyncd", to, &g_env),
                    err, LS_INTERNAL, "ORT environment");
    ort->ReleaseThreadingOptions(to);
    if (!rc)
        rc |= check(ort->CreateCpuMemoryInfo(OrtDeviceAllocator, OrtMemTypeDefault, &g_cpu_mem), err,
                    LS_INTERNAL, "ORT memory info");
    if (rc) {
        ls_engine_global_shutdown();
        return -1;
    }
    LOG_INFO("onnxruntime %s ready (intra threads %d, inter threads %d)", base->GetVersionString(),
             intra_threads, inter_threads);
    return 0;
}

void ls_engine_global_shutdown(void) {
    if (!ort) return;
    if (g_cpu_mem) ort->ReleaseMemoryInfo(g_cpu_mem);
    if (g_env) ort->ReleaseEnv(g_env);
    g_cpu_mem = NULL;
    g_env = NULL;
}

/* The session and path read_tensor_info needs, of an engine or encoder. */
typedef struct {
    OrtSession *session;
    const char *path;
} session_ref;

/* Read name and shape of input/output `i` into *ti; checks float32 type. */
static int read_tensor_info(const session_ref *e, int is_input, size_t i, ls_tensor_info *ti, ls_err *err) {
    OrtAllocator *alloc = NULL;
    if (check(ort->GetAllocatorWithDefaultOptions(&alloc), err, LS_INTERNAL, "ORT allocator")) return -1;
    char *name = NULL;
    OrtStatus *st = is_input ? ort->SessionGetInputName(e->session, i, alloc, &name)
                             : ort->SessionGetOutputName(e->session, i, alloc, &name);
    if (check(st, err, LS_FAILED_PRECONDITION, e->path)) return -1;
    snprintf(ti->name, sizeof ti->name, "%s", name);
    OrtStatus *fst = ort->AllocatorFree(alloc, name);
    if (fst) ort->ReleaseStatus(fst);

    OrtTypeInfo *type = NULL;
    st = is_input ? ort->SessionGetInputTypeInfo(e->session, i, &type)
                  : ort->SessionGetOutputTypeInfo(e->session, i, &type);
    if (check(st, err, LS_FAILED_PRECONDITION, e->path)) return -1;
    const OrtTensorTypeAndShapeInfo *shape = NULL;
    ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t nd = 0;
    int rc = check(ort->CastTypeInfoToTensorInfo(type, &shape), err, LS_FAILED_PRECONDITION, e->path);
    if (!rc && !shape)
        rc = ls_err_set(err, LS_FAILED_PRECONDITION, "%s: %s '%s' is not a tensor", e->path,
                        is_input ? "input" : "output", ti->name);
    if (!rc) rc = check(ort->GetTensorElementType(shape, &et), err, LS_FAILED_PRECONDITION, e->path);
    if (!rc) rc = check(ort->GetDimensionsCount(shape, &nd), err, LS_FAILED_PRECONDITION, e->path);
    if (!rc && (nd < 2 || nd > LS_MAX_DIMS))
        rc = ls_err_set(err, LS_FAILED_PRECONDITION, "%s: %s '%s' has %zu dimensions, expected 2..%d",
                        e->path, is_input ? "input" : "output", ti->name, nd, LS_MAX_DIMS);
    if (!rc) rc = check(ort->GetDimensions(shape, ti->dims, nd), err, LS_FAILED_PRECONDITION, e->path);
    if (!rc && et != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        rc = ls_err_set(err, LS_FAILED_PRECONDITION, "%s: %s '%s' has element type %d, expected float32",
                        e->path, is_input ? "input" : "output", ti->name, (int)et);
    ti->ndims = (int)nd;
    ort->ReleaseTypeInfo(type);
    return rc;
}

static size_t per_frame(const ls_tensor_info *t) {
    size_t n = 1;
    for (int d = 1; d < t->ndims; d++) n *= (size_t)t->dims[d];
    return n;
}

static int has_dynamic_inner(const ls_tensor_info *t) {
    for (int d = 1; d < t->ndims; d++)
        if (t->dims[d] <= 0) return 1;
    return 0;
}

/* Decide which input is visual and which audio, and check shapes. */
static int classify(ls_engine *e, const ls_tensor_info *raw, ls_err *err) {
    int vis = -1;
    for (int i = 0; i < 2; i++)
        if (raw[i].ndims == 4 && raw[i].dims[1] == 6) vis = i;
    if (vis < 0)
        return ls_err_set(err, LS_FAILED_PRECONDITION,
                          "%s: no visual input of shape [N,6,P,P] (inputs '%s', '%s')", e->path,
                          raw[0].name, raw[1].name);
    int aud = 1 - vis;
    e->in[0] = raw[vis];
    e->in[1] = raw[aud];
    e->in_index[0] = vis;
    e->in_index[1] = aud;
    const ls_tensor_info *v = &e->in[0], *a = &e->in[1], *o = &e->out;
    if (v->dims[2] <= 0 || v->dims[2] != v->dims[3])
        return ls_err_set(err, LS_FAILED_PRECONDITION,
                          "%s: visual input '%s' must be [N,6,P,P] with fixed square P, got [%lld,%lld,%lld,%lld]",
                          e->path, v->name, (long long)v->dims[0], (long long)v->dims[1],
                          (long long)v->dims[2], (long long)v->dims[3]);
    if (has_dynamic_inner(a))
        return ls_err_set(err, LS_FAILED_PRECONDITION,
                          "%s: audio input '%s' must have fixed non-batch dimensions", e->path, a->name);
    e->pred_size = (int)v->dims[2];
    if (o->ndims != 4 || o->dims[1] != 3 || o->dims[2] != v->dims[2] || o->dims[3] != v->dims[3])
        return ls_err_set(err, LS_FAILED_PRECONDITION,
                          "%s: output '%s' must be [N,3,%d,%d] (ndims %d, dims[1]=%lld)", e->path, o->name,
                          e->pred_size, e->pred_size, o->ndims, (long long)o->dims[1]);
    int64_t b = v->dims[0];
    if ((a->dims[0] > 0 && a->dims[0] != b) || (o->dims[0] > 0 && o->dims[0] != b))
        return ls_err_set(err, LS_FAILED_PRECONDITION, "%s: inputs and output disagree on the batch dimension",
                          e->path);
    e->fixed_batch = b > 0 ? (int)b : 0;
    e->visual_per_frame = per_frame(v);
    e->audio_per_frame = per_frame(a);
    e->output_per_frame = per_frame(o);
    e->in_names[vis] = e->in[0].name;
    e->in_names[aud] = e->in[1].name;
    e->out_names[0] = e->out.name;
    return 0;
}

/* ---- execution providers ---------------------------------------------------- */

const char *ls_engine_provider_name(ls_exec_provider p) { return p == LS_EP_CUDA ? "cuda" : "cpu"; }

void ls_engine_providers(char *buf, size_t size) {
    char **names = NULL;
    int n = 0;
    size_t used = 0;
    buf[0] = 0;
    OrtStatus *st = ort ? ort->GetAvailableProviders(&names, &n) : NULL;
    if (!ort || st) {
        if (st) ort->ReleaseStatus(st);
        snprintf(buf, size, "(unknown)");
        return;
    }
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", names[i]);
    st = ort->ReleaseAvailableProviders(names, n);
    if (st) ort->ReleaseStatus(st);
}

/* Append the CUDA provider with opts's settings to so. On failure err says
 * which provider, ORT's reason, what this build lists and where a GPU build
 * goes. */
static int append_cuda(OrtSessionOptions *so, const ls_engine_opts *opts, ls_err *err) {
    static const char *const search[] = {"EXHAUSTIVE", "HEURISTIC", "DEFAULT"};
    char dev[16], limit[24];
    snprintf(dev, sizeof dev, "%d", opts->device_id);
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)opts->gpu_mem_limit);
    const char *keys[3] = {"device_id", "cudnn_conv_algo_search", "gpu_mem_limit"};
    const char *vals[3] = {dev, search[opts->cudnn_search], limit};
    size_t nkeys = opts->gpu_mem_limit ? 3 : 2; /* absent = ORT's default: no cap */
    OrtCUDAProviderOptionsV2 *cuda = NULL;
    int rc = check(ort->CreateCUDAProviderOptions(&cuda), err, LS_FAILED_PRECONDITION, "CUDA provider options");
    if (!rc) rc = check(ort->UpdateCUDAProviderOptions(cuda, keys, vals, nkeys), err, LS_FAILED_PRECONDITION,
                        "CUDA provider options");
    if (!rc) rc = check(ort->SessionOptionsAppendExecutionProvider_CUDA_V2(so, cuda), err, LS_FAILED_PRECONDITION,
                        "CUDA provider");
    if (cuda) ort->ReleaseCUDAProviderOptions(cuda);
    if (rc && err) {
        char reason[LS_ERR_MSG_MAX], providers[256];
        snprintf(reason, sizeof reason, "%s", err->msg);
        ls_engine_providers(providers, sizeof providers);
        ls_err_set(err, LS_FAILED_PRECONDITION,
                   "CUDA execution provider unavailable in ONNX Runtime %s: %s; this build lists %s (a listed "
                   "provider also needs its provider library beside libonnxruntime); to run on a GPU, set "
                   "ORT_ROOT to an ONNX Runtime GPU release (onnxruntime-linux-x64-gpu-<version>, with the CUDA "
                   "and cuDNN it was built for) and rebuild, or use execution_provider: cpu",
                   OrtGetApiBase()->GetVersionString(), reason, providers);
    }
    return rc;
}

/* Session options for opts: global thread pools, every graph optimisation,
 * the provider. */
static int session_options(const ls_engine_opts *opts, OrtSessionOptions **out, ls_err *err) {
    OrtSessionOptions *so = NULL;
    int rc = check(ort->CreateSessionOptions(&so), err, LS_INTERNAL, "ORT session options");
    if (!rc) rc = check(ort->DisablePerSessionThreads(so), err, LS_INTERNAL, "ORT session options");
    if (!rc)
        rc = check(ort->SetSessionGraphOptimizationLevel(so, ORT_ENABLE_ALL), err, LS_INTERNAL,
                   "ORT session options");
    if (!rc && opts->provider == LS_EP_CUDA) rc = append_cuda(so, opts, err);
    if (rc && so) {
        ort->ReleaseSessionOptions(so);
        so = NULL;
    }
    *out = so;
    return rc;
}

int ls_engine_provider_check(const ls_engine_opts *opts, ls_err *err) {
    if (!g_env) return ls_err_set(err, LS_INTERNAL, "ls_engine_global_init was not called");
    OrtSessionOptions *so = NULL;
    int rc = session_options(opts, &so, err);
    if (so) ort->ReleaseSessionOptions(so);
    return rc;
}

/* NVML, resolved once at first use; NULL functions = not there. The three
 * entry points and nvmlMemory_t's layout (total, free, used: unsigned long
 * long) are NVML's stable ABI since its first release. */
typedef struct {
    unsigned long long total, free, used;
} nvml_memory;
static struct {
    pthread_once_t once;
    int (*device_by_index)(unsigned int, void **);
    int (*memory_info)(void *, nvml_memory *);
} nvml = {.once = PTHREAD_ONCE_INIT};

static void nvml_open(void) {
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return; /* kept open for the process's life when found */
    int (*init)(void) = (int (*)(void))dlsym(lib, "nvmlInit_v2");
    nvml.device_by_index = (int (*)(unsigned int, void **))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    nvml.memory_info = (int (*)(void *, nvml_memory *))dlsym(lib, "nvmlDeviceGetMemoryInfo");
    if (!init || init() != 0) nvml.device_by_index = NULL;
}

int64_t ls_engine_gpu_used_bytes(int device_id) {
    pthread_once(&nvml.once, nvml_open);
    void *dev = NULL;
    nvml_memory m;
    if (!nvml.device_by_index || !nvml.memory_info || device_id < 0 ||
        nvml.device_by_index((unsigned)device_id, &dev) != 0 || nvml.memory_info(dev, &m) != 0)
        return -1;
    return (int64_t)m.used;
}

/* ---- sessions --------------------------------------------------------------- */

/* A session on the global environment and thread pools, fully optimised, on
 * opts's provider. */
static int open_session(const char *path, const ls_engine_opts *opts, OrtSession **out, ls_err *err) {
    OrtSessionOptions *so = NULL;
    int rc = session_options(opts, &so, err);
    if (rc) ls_err_prefix(err, "cannot load model: %s", path);
    if (!rc) {
        rc = check(ort->CreateSession(g_env, path, so, out), err, LS_FAILED_PRECONDITION, path);
        if (rc) ls_err_prefix(err, "cannot load model");
    }
    if (so) ort->ReleaseSessionOptions(so);
    return rc;
}

/* open_session, then the model's input and output counts. */
static int open_counted(const char *path, const ls_engine_opts *opts, OrtSession **out, size_t *nin, size_t *nout,
                        ls_err *err) {
    if (!g_env) return ls_err_set(err, LS_INTERNAL, "ls_engine_global_init was not called");
    int rc = open_session(path, opts, out, err);
    if (!rc && opts->provider != LS_EP_CPU) {
        char providers[256];
        ls_engine_providers(providers, sizeof providers);
        LOG_INFO("%s: session on %s (device %d; the CPU provider takes the nodes it cannot run); "
                 "ONNX Runtime lists %s", path, ls_engine_provider_name(opts->provider), opts->device_id, providers);
    }
    if (!rc) rc = check(ort->SessionGetInputCount(*out, nin), err, LS_FAILED_PRECONDITION, path);
    if (!rc) rc = check(ort->SessionGetOutputCount(*out, nout), err, LS_FAILED_PRECONDITION, path);
    return rc;
}

static const ls_engine_opts cpu_opts;

ls_engine *ls_engine_open(const char *path, const ls_engine_opts *opts, ls_err *err) {
    ls_engine *e = calloc(1, sizeof *e);
    if (!e || !(e->path = strdup(path))) {
        free(e);
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory opening %s", path);
        return NULL;
    }
    e->opts = opts ? *opts : cpu_opts;
    size_t nin = 0, nout = 0;
    int rc = open_counted(path, &e->opts, &e->session, &nin, &nout, err);
    if (!rc && (nin != 2 || nout < 1))
        rc = ls_err_set(err, LS_FAILED_PRECONDITION,
                        "%s: model has %zu inputs and %zu outputs, expected 2 inputs (visual, audio) and 1 output",
                        path, nin, nout);
    ls_tensor_info raw[2];
    memset(raw, 0, sizeof raw);
    session_ref ref = {e->session, e->path};
    for (size_t i = 0; !rc && i < 2; i++) rc = read_tensor_info(&ref, 1, i, &raw[i], err);
    if (!rc) rc = read_tensor_info(&ref, 0, 0, &e->out, err);
    if (!rc) rc = classify(e, raw, err);
    if (rc) {
        ls_engine_close(e);
        return NULL;
    }
    return e;
}

void ls_engine_close(ls_engine *e) {
    if (!e) return;
    if (e->session) ort->ReleaseSession(e->session);
    free(e->path);
    free(e);
}

int ls_engine_pred_size(const ls_engine *e) { return e->pred_size; }
size_t ls_engine_visual_per_frame(const ls_engine *e) { return e->visual_per_frame; }
size_t ls_engine_audio_per_frame(const ls_engine *e) { return e->audio_per_frame; }
size_t ls_engine_output_per_frame(const ls_engine *e) { return e->output_per_frame; }

const ls_tensor_info *ls_engine_inputs(const ls_engine *e, int *n) {
    *n = 2;
    return e->in;
}

const ls_tensor_info *ls_engine_outputs(const ls_engine *e, int *n) {
    *n = 1;
    return &e->out;
}

/* Wrap caller memory as a float tensor of shape dims with batch b. */
static int wrap(const ls_tensor_info *t, int64_t b, const float *data, OrtValue **out, ls_err *err) {
    int64_t shape[LS_MAX_DIMS];
    size_t n = (size_t)b;
    shape[0] = b;
    for (int d = 1; d < t->ndims; d++) {
        shape[d] = t->dims[d];
        n *= (size_t)t->dims[d];
    }
    /* ORT does not write to input tensors; the cast drops const only for the API. */
    return check(ort->CreateTensorWithDataAsOrtValue(g_cpu_mem, (void *)data, n * sizeof(float), shape,
                                                     (size_t)t->ndims, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, out),
                 err, LS_INTERNAL, "ORT tensor");
}

/* `n` floats at p, at an address ORT's kernels treat like any other: p itself
 * when LS_TENSOR_ALIGN-aligned, else a copy in *copy (the caller frees it).
 * Why: ORT's vectorised reductions (ReduceMean and friends) start their
 * packets at the first aligned element, so the order of the sum, and so the
 * last bit of the result, depends on the input's address mod 16. Measured on
 * the demo encoder and U-Net (tests/test_engine.c): inputs 4, 8 or 12 bytes
 * off gave other bits. Under ASan malloc returns 8-byte aligned blocks, and a
 * session's frames then differed from RenderSpeech's for the same audio. */
static const float *aligned_input(const float *p, size_t n, float **copy, ls_err *err) {
    *copy = NULL;
    if (((uintptr_t)p & (LS_TENSOR_ALIGN - 1)) == 0) return p;
    if (!(*copy = ls_alloc_aligned(n * sizeof(float)))) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for an aligned copy of %zu input floats", n);
        return NULL;
    }
    memcpy(*copy, p, n * sizeof(float));
    return *copy;
}

/* One run: inputs in[0..nin) named in_names, one output written into the
 * memory `out` wraps. With io_binding through an OrtIoBinding (on CUDA the
 * provider copies host inputs in and the output back into out itself), else
 * ORT's Run. */
static int run_session(OrtSession *s, int io_binding, const char *const *in_names, OrtValue *const *in, size_t nin,
                       const char *out_name, OrtValue *out, ls_err *err) {
    if (!io_binding)
        return check(ort->Run(s, NULL, in_names, (const OrtValue *const *)in, nin, &out_name, 1, &out), err, LS_INTERNAL,
                     "inference failed");
    OrtIoBinding *b = NULL;
    int rc = check(ort->CreateIoBinding(s, &b), err, LS_INTERNAL, "ORT IoBinding");
    for (size_t i = 0; !rc && i < nin; i++) rc = check(ort->BindInput(b, in_names[i], in[i]), err, LS_INTERNAL, "ORT IoBinding");
    if (!rc) rc = check(ort->BindOutput(b, out_name, out), err, LS_INTERNAL, "ORT IoBinding");
    if (!rc) rc = check(ort->RunWithBinding(s, NULL, b), err, LS_INTERNAL, "inference failed");
    if (!rc) rc = check(ort->SynchronizeBoundOutputs(b), err, LS_INTERNAL, "inference failed");
    if (b) ort->ReleaseIoBinding(b);
    return rc;
}

/* One ORT Run over `b` frames; audio must hold b windows. */
static int run_chunk(ls_engine *e, const float *visual, const float *audio, int b, float *out, ls_err *err) {
    OrtValue *in[2] = {NULL, NULL}, *o = NULL;
    float *vcopy = NULL, *acopy = NULL;
    visual = aligned_input(visual, (size_t)b * e->visual_per_frame, &vcopy, err);
    if (visual) audio = aligned_input(audio, (size_t)b * e->audio_per_frame, &acopy, err);
    if (!visual || !audio) {
        free(vcopy);
        return -1;
    }
    int rc = wrap(&e->in[0], b, visual, &in[e->in_index[0]], err);
    if (!rc) rc = wrap(&e->in[1], b, audio, &in[e->in_index[1]], err);
    if (!rc) rc = wrap(&e->out, b, out, &o, err);
    if (!rc) {
        rc = run_session(e->session, e->opts.io_binding, e->in_names, in, 2, e->out_names[0], o, err);
        if (rc) ls_err_prefix(err, "%s", e->path); /* which file's graph failed */
    }
    for (int i = 0; i < 2; i++)
        if (in[i]) ort->ReleaseValue(in[i]);
    if (o) ort->ReleaseValue(o);
    free(vcopy);
    free(acopy);
    return rc;
}

int ls_engine_run(ls_engine *e, const float *visual, const float *audio, int audio_shared, int batch,
                  float *out, ls_err *err) {
    int chunk = e->fixed_batch ? e->fixed_batch : batch;
    float *shared = NULL;
    if (audio_shared && chunk > 1) {
        /* Broadcast the single window to every frame of a chunk. Small: 32 KiB a frame. */
        shared = ls_alloc_aligned((size_t)chunk * e->audio_per_frame * sizeof(float));
        if (!shared) return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for audio windows");
        for (int i = 0; i < chunk; i++)
            memcpy(shared + (size_t)i * e->audio_per_frame, audio, e->audio_per_frame * sizeof(float));
    }
    int rc = 0;
    for (int done = 0; !rc && done < batch;) {
        int b = batch - done < chunk ? batch - done : chunk;
        if (e->fixed_batch && b != e->fixed_batch) {
            /* A model with fixed batch k > 1 and a remainder: not supported by the
             * shapes it declares. Real exports use k = 1, which always divides. */
            rc = ls_err_set(err, LS_INVALID_ARGUMENT,
                            "model has a fixed batch of %d; batch_size must be a multiple of it, got %d",
                            e->fixed_batch, batch);
            break;
        }
        const float *a = audio_shared ? (shared ? shared : audio) : audio + (size_t)done * e->audio_per_frame;
        rc = run_chunk(e, visual + (size_t)done * e->visual_per_frame, a, b,
                       out + (size_t)done * e->output_per_frame, err);
        done += b;
    }
    free(shared);
    return rc;
}

/* ---- audio encoder ---------------------------------------------------------- */

struct ls_encoder {
    OrtSession *session;
    char *path;
    ls_engine_opts opts;
    ls_tensor_info in, out;
    const char *in_names[1], *out_names[1];
    int fixed_batch;  /* 0 = dynamic */
};

/* [B, 1, 80, 16] or [B, 80, 16] in, [B, 512] out: per window 80 x 16 floats
 * in, 512 out, whatever the rank. */
static int check_encoder_shapes(ls_encoder *e, ls_err *err) {
    const ls_tensor_info *i = &e->in, *o = &e->out;
    int in_ok = (i->ndims == 4 && i->dims[1] == 1 && i->dims[2] == 80 && i->dims[3] == 16) ||
                (i->ndims == 3 && i->dims[1] == 80 && i->dims[2] == 16);
    if (!in_ok)
        return ls_err_set(err, LS_FAILED_PRECONDITION,
                          "%s: audio encoder input '%s' must be [B,1,80,16] or [B,80,16] (rank %d, dims[1]=%lld)",
                          e->path, i->name, i->ndims, (long long)i->dims[1]);
    if (o->ndims != 2 || o->dims[1] != 512)
        return ls_err_set(err, LS_FAILED_PRECONDITION, "%s: audio encoder output '%s' must be [B,512] (rank %d)",
                          e->path, o->name, o->ndims);
    if ((i->dims[0] > 0 || o->dims[0] > 0) && i->dims[0] != o->dims[0])
        return ls_err_set(err, LS_FAILED_PRECONDITION, "%s: audio encoder input and output disagree on the batch",
                          e->path);
    e->fixed_batch = i->dims[0] > 0 ? (int)i->dims[0] : 0;
    return 0;
}

ls_encoder *ls_encoder_open(const char *path, const ls_engine_opts *opts, ls_err *err) {
    ls_encoder *e = calloc(1, sizeof *e);
    if (!e || !(e->path = strdup(path))) {
        free(e);
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory opening %s", path);
        return NULL;
    }
    e->opts = opts ? *opts : cpu_opts;
    size_t nin = 0, nout = 0;
    int rc = open_counted(path, &e->opts, &e->session, &nin, &nout, err);
    if (!rc && (nin != 1 || nout < 1))
        rc = ls_err_set(err, LS_FAILED_PRECONDITION,
                        "%s: audio encoder has %zu inputs and %zu outputs, expected 1 input (mel window) and 1 output",
                        path, nin, nout);
    session_ref ref = {e->session, e->path};
    if (!rc) rc = read_tensor_info(&ref, 1, 0, &e->in, err);
    if (!rc) rc = read_tensor_info(&ref, 0, 0, &e->out, err);
    if (!rc) rc = check_encoder_shapes(e, err);
    if (rc) {
        ls_encoder_close(e);
        return NULL;
    }
    e->in_names[0] = e->in.name;
    e->out_names[0] = e->out.name;
    return e;
}

void ls_encoder_close(ls_encoder *e) {
    if (!e) return;
    if (e->session) ort->ReleaseSession(e->session);
    free(e->path);
    free(e);
}

int ls_encoder_run(ls_encoder *e, const float *in, int batch, float *out, ls_err *err) {
    int chunk = e->fixed_batch ? e->fixed_batch : batch;
    int rc = 0;
    for (int done = 0; !rc && done < batch;) {
        int b = batch - done < chunk ? batch - done : chunk;
        if (e->fixed_batch && b != e->fixed_batch)
            return ls_err_set(err, LS_INTERNAL, "%s: fixed batch %d does not divide %d windows", e->path,
                              e->fixed_batch, batch);
        OrtValue *vi = NULL, *vo = NULL;
        float *copy = NULL;
        const float *x = aligned_input(in + (size_t)done * 80 * 16, (size_t)b * 80 * 16, &copy, err);
        if (!x) return -1;
        rc = wrap(&e->in, b, x, &vi, err);
        if (!rc) rc = wrap(&e->out, b, out + (size_t)done * 512, &vo, err);
        if (!rc) {
            rc = run_session(e->session, e->opts.io_binding, e->in_names, &vi, 1, e->out_names[0], vo, err);
            if (rc) ls_err_prefix(err, "%s: audio encoder", e->path);
        }
        if (vi) ort->ReleaseValue(vi);
        if (vo) ort->ReleaseValue(vo);
        free(copy);
        done += b;
    }
    return rc;
}
