/* config.h - the YAML configuration (via libyaml). Every key, its default
 * and the form it takes; between the markers, ls_config_doc's output from
 * the tables that parse them (unit_config checks that they agree).
 *
 * --- reference ---
 *   server:                          # the gRPC listener and request handling
 *     listen: 0.0.0.0:50053          # gRPC address (host:port (or [ipv6]:port) with port 1..65535)
 *     max_message_mb: 128            # gRPC send/receive limit (an integer 1..2047)
 *     worker_threads: 4              # request workers (0 = number of cores) (an integer 0..256)
 *     ort_intra_threads: 0           # ONNX Runtime intra-op threads (0 = its default) (an integer 0..256)
 *     ort_inter_threads: 1           # ONNX Runtime inter-op threads (an integer 0..256)
 *     max_batch: 32                  # largest accepted batch_size (an integer 1..1024)
 *     png_level: 1                   # ISA-L deflate level for flat rows (an integer 0..3)
 *     max_queue: 256                 # requests waiting for a worker; more: RESOURCE_EXHAUSTED (an integer 1..1000000)
 *     drain_seconds: 10              # on SIGTERM, how long in-flight requests may finish (a number >= 0 and <= 3600)
 *     unready_grace_seconds: 0       # on SIGTERM, /readyz 503 but serving this long (a number >= 0 and <= 3600)
 *     keepalive_seconds: 60          # PING a connection with calls silent this long; 0 = off (a number >= 0 and <= 86400)
 *     keepalive_timeout_seconds: 20  # no PING ACK this long: closed (a number >= 0.1 and <= 3600)
 *     max_connection_idle_seconds: 300 # no call this long: GOAWAY; 0 = never (a number >= 0 and <= 86400)
 *   capacity:                        # which models stay loaded
 *     max_models: 4                  # models loaded at once (an integer >= 1)
 *     max_memory_gb: 8               # for loaded models; may be fractional (a number > 0 and <= 1048576)
 *     eviction_policy: lru           # victim choice (evict.h) (lru, lfu or lfu_count)
 *     idle_unload_minutes: 30        # unused this long: unloaded; 0 = never (a number >= 0 and <= 10000000)
 *     idle_check_seconds: 60         # idle sweep period (a number > 0 and <= 1000000000)
 *     stats_report_seconds: 300      # statistics log period (a number > 0 and <= 1000000000)
 *     load_retry_seconds: 10         # backoff after a failed load; 0 = next request (a number >= 0 and <= 1000000000)
 *     lfu_half_life_minutes: 10      # lfu: score halves this often (a number > 0 and <= 10000000)
 *     lfu_initial: 5                 # lfu: score of a model just loaded (log2(1 + uses)) (a number >= 0 and <= 64)
 *     min_residency_seconds: 30      # loaded more recently: no victim; 0 = off (a number >= 0 and <= 1000000000)
 *     max_gpu_memory_gb: 0           # GPU memory of models on cuda; 0 = no limit (a number >= 0 and <= 1048576)
 *   models:                          # by id: 1..128 of A-Z a-z 0-9 _ . -
 *     <id>:
 *       model_path:                  # required: the lip-sync ONNX model (relative to this file)
 *       background_dir:              # required: the avatar's frames, PNG/JPEG in name order
 *       crop_rects_path:             # required: crop rectangles (JSON)
 *       num_frames: 0                # frames used; 0 = all found (an integer >= 0)
 *       preload: false               # load at start
 *       pinned: false                # never evicted or idle-unloaded
 *       memory_estimate_mb: 512      # charged until measured (an integer 0..16777216)
 *       frame_order: loop            # which background frame i is (loop or pingpong)
 *       channel_order: bgr           # the model's output planes (bgr or rgb)
 *       paste_margin: 4              # canvas margin of 328; 0 = stretch (an integer 0..64)
 *       max_concurrent_requests: 0   # more at once: RESOURCE_EXHAUSTED; 0 = no limit (an integer 0..100000)
 *       max_sessions: 0              # live sessions on it; more: RESOURCE_EXHAUSTED; 0 = no limit (an integer 0..100000)
 *       output_format: png           # a request may ask for another (png, jpeg or raw)
 *       jpeg_quality: 90             # JPEG output quality (an integer 1..100)
 *       paste_interpolation: cubic   # canvas resizes of the paste-back (cubic or linear)
 *       visual_input:                # the server-built visual input (requests without one)
 *         margin:                    # canvas margin; absent = paste_margin (they must agree) (an integer 0..64)
 *         mask: [5, 5, 310, 305]     # blacked out in the masked copy: x, y, w, h for S = 320, scaled
 *         interpolation: cubic       # crop -> (S+2m)^2 resize (cubic or linear)
 *         cache: auto                # keep 8-bit inputs; auto = if <= 25% of the frames' memory (auto, on or off)
 *       audio_encoder:               # optional: speech in for this model
 *         model_path:                # required: [B,1,80,16] or [B,80,16] mel window -> [B,512]
 *         kind: ave                  # SyncTalk_2D's "ave" features, the only kind (ave)
 *       execution_provider: inherit  # inherit = engine.execution_provider (inherit, cpu or cuda)
 *       gpu_memory_estimate_mb: 512  # cuda: charged until measured (an integer 0..16777216)
 *   engine:                          # ONNX Runtime (models.<id>.execution_provider overrides)
 *     execution_provider: cpu        # ONNX Runtime provider for every model (cpu or cuda)
 *     device_id: 0                   # cuda: the GPU (an integer 0..255)
 *     gpu_mem_limit_mb: 0            # cuda: arena cap per session; 0 = none (an integer 0..16777216)
 *     cudnn_conv_algo_search: heuristic # cuda: how cuDNN picks convolutions (exhaustive, heuristic or default)
 *     io_binding: true               # runs bind inputs and outputs to the caller's buffers (ORT IoBinding)
 *   audio:                           # speech in (ExtractAudioFeatures, RenderSpeech, sessions)
 *     max_seconds: 600               # longer audio: INVALID_ARGUMENT; the longest session (a number > 0 and <= 36000)
 *   sessions:                        # live StreamSession and WebSocket sessions
 *     max: 64                        # live sessions at once; more: RESOURCE_EXHAUSTED (an integer 1..100000)
 *     stall_timeout_s: 30            # a client taking no frame this long: DEADLINE_EXCEEDED (a number > 0 and <= 3600)
 *     latency_budget_ms: 150         # a frame sent later than this after its audio is late (metrics) (an integer 1..60000)
 *     prioritize_live: true          # offline work (RenderSpeech, sessions > 1 s ahead of real time) waits for live renders (read at start)
 *   http:                            # the HTTP listener
 *     enabled: true                  # HTTP/1.1: /metrics, /healthz, /readyz, gRPC-Web, demo page, /session
 *     listen: 0.0.0.0:8053           # HTTP address (host:port (or [ipv6]:port) with port 1..65535)
 *     cors_origins:                  # origins allowed cross-origin ("*" = any); none = same-origin only
 *     web_root:                      # the demo page's files (default: the source tree's web/)
 *     speech_wav:                    # optional: served at GET /speech.wav (the demo page's speech)
 *     websocket_ping_seconds: 20     # WebSocket keepalive; silent for 3: gone (a number >= 0.1 and <= 3600)
 *   auth:                            # optional tenant keys; absent = no keys needed
 *     enabled:                       # a present section means true
 *     keys:                          # a list
 *       -
 *         name:                      # in logs and metrics (default "unnamed")
 *         sha256:                    # 64 hex: SHA-256 of the key; exactly one of sha256 | key_file | key_env
 *         key_file:                  # a file whose first line is the key (at least 16 characters)
 *         key_env:                   # an environment variable holding the key
 *         models:                    # ids or glob patterns this key may use, e.g. [demo, "bob*"]
 *         admin:                     # every model, plus Load/Unload
 *   tls:                             # optional; absent = plaintext
 *     cert_file:                     # server certificate chain (PEM)
 *     key_file:                      # its private key
 *     client_ca_file:                # optional: require client certificates it signed
 * --- end of reference ---
 *
 * Relative paths are relative to the config file.
 * Unknown keys and bad values are errors naming file, line, key and the
 * expected form. Model ids: 1..128 chars of [A-Za-z0-9_.-]. */
#ifndef LS_CONFIG_H
#define LS_CONFIG_H

#include <stdio.h>

#include "auth.h"
#include "common.h"

/* ls_frame_order and ls_cache_mode (visual_input.cache) are common.h's: the
 * avatar and model layers own them, the config only names their values. */

/* visual_input: how the server builds a model's visual input (visual.h). */
typedef struct {
    int margin;            /* default = paste_margin (4) */
    int mask[4];           /* x, y, w, h for S = 320; default 5, 5, 310, 305 */
    ls_interp interp;      /* default cubic */
    ls_cache_mode cache;   /* default auto */
} ls_visual_config;

typedef struct {
    char *id;
    char *model_path;      /* resolved against the config file's directory */
    char *background_dir;  /* resolved */
    char *crop_rects_path; /* resolved */
    int num_frames;        /* 0 = all found */
    int preload;
    int pinned;
    uint64_t memory_estimate_bytes; /* default 512 MiB */
    ls_frame_order frame_order;
    int channel_bgr;       /* default 1 */
    int paste_margin;      /* default 4; range 0..64 */
    int max_concurrent_requests; /* default 0 = no limit */
    int max_sessions;      /* default 0 = no limit */
    ls_format output_format; /* default PNG */
    int jpeg_quality;      /* default 90; 1..100 */
    ls_interp paste_interp; /* default cubic */
    ls_visual_config visual;
    char *encoder_path;    /* audio_encoder.model_path, resolved; NULL = no speech in */
    int execution_provider; /* 0 = engine.execution_provider, else 1 + ls_exec_provider */
    uint64_t gpu_memory_estimate_bytes; /* default 512 MiB; charged until measured, on cuda only */
} ls_model_config;

typedef struct {
    char *source;          /* file path the config came from, or "<string>" */
    /* server */
    char *listen;          /* default "0.0.0.0:50053" */
    uint64_t max_message_bytes; /* default 128 MiB */
    int worker_threads;    /* default 4 */
    int ort_intra_threads; /* default 0 */
    int ort_inter_threads; /* default 1 */
    int max_batch;         /* default 32; range 1..1024 */
    int png_level;         /* default 1; range 0..3 */
    int max_queue;         /* default 256; range 1..1000000 */
    double drain_seconds;  /* default 10; range 0..3600 */
    double unready_grace_seconds; /* default 0; range 0..3600: a balancer's fall x inter */
    double keepalive_seconds;   /* default 60; 0 = gRPC's (off) */
    double keepalive_timeout_seconds; /* default 20 */
    double max_connection_idle_seconds; /* default 300; 0 = never */
    /* capacity */
    int max_models;        /* default 4; >= 1 */
    uint64_t max_memory_bytes;  /* default 8 GiB */
    ls_policy policy;      /* default LRU */
    double idle_unload_seconds; /* default 1800; 0 disables */
    double lfu_half_life_seconds; /* default 600; > 0 */
    double lfu_initial;         /* default 5; 0..64 */
    double min_residency_seconds; /* default 30; 0 = no churn guard */
    double idle_check_seconds;  /* default 60 */
    double stats_report_seconds;/* default 300 */
    double load_retry_seconds;  /* default 10 */
    uint64_t max_gpu_memory_bytes; /* default 0 = no limit: for models on cuda */
    /* engine: ONNX Runtime's execution provider (engine.h) */
    ls_exec_provider execution_provider; /* default cpu */
    int cuda_device_id;         /* default 0 */
    uint64_t gpu_mem_limit_bytes; /* default 0 = ORT's (no limit) */
    ls_cudnn_search cudnn_conv_algo_search; /* default heuristic */
    int io_binding;             /* default 1 */
    /* audio */
    double audio_max_seconds;   /* default 600; also the longest session */
    /* sessions */
    int sessions_max;           /* default 64: live StreamSession calls at once */
    double sessions_stall_seconds; /* default 30: a client not reading a frame this long ends its session */
    int sessions_latency_budget_ms; /* default 150: a frame sent later than this after its audio is late */
    int sessions_prioritize_live; /* default 1: offline renders wait while live ones run (serve/gate.h) */
    /* http */
    int http_enabled;      /* default 1 */
    char *http_listen;     /* default "0.0.0.0:8053" */
    char **cors_origins;   /* exact origins, or "*"; none = same-origin only */
    size_t n_cors_origins;
    char *web_root;        /* default LS_WEB_ROOT (compiled in: the source tree's web/) */
    char *speech_wav;      /* served at GET /speech.wav (the demo page's speech); NULL = not served */
    double http_ws_ping_seconds; /* WebSocket keepalive: ping after this much silence (default 20) */
    /* auth (see auth.h); enabled = 0 when the section is absent */
    ls_auth auth;
    /* tls: all NULL = plaintext */
    char *tls_cert_file;
    char *tls_key_file;
    char *tls_client_ca_file;
    /* models, in file order */
    ls_model_config *models;
    size_t n_models;
} ls_config;

/* Fill *cfg with defaults and no models. */
void ls_config_defaults(ls_config *cfg);

/* Parse YAML text. base_dir resolves relative paths (NULL = cwd); source names
 * the text in messages. On failure returns -1, err = INVALID_ARGUMENT with
 * "<source>:<line>: <key>: expected ..., got ...", and *cfg is left freed. */
int ls_config_parse(const char *yaml, size_t len, const char *source, const char *base_dir,
                    ls_config *cfg, ls_err *err);

/* Read and parse a file; relative paths resolve against its directory. */
int ls_config_load_file(const char *path, ls_config *cfg, ls_err *err);

const ls_model_config *ls_config_find(const ls_config *cfg, const char *id);

/* Frees whatever is there (a config may be half filled when a parse fails)
 * and zeroes the struct, so a second call is harmless. */
void ls_config_free(ls_config *cfg);

/* The reference of every key (section, default, form, one line of doc),
 * each line after prefix: with " * " it is the comment at the top of this
 * file; written from the tables that parse them (`lipsyncd --config-doc`). */
void ls_config_doc(FILE *out, const char *prefix);

#endif
