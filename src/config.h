/* config.h - the YAML configuration (via libyaml).
 *
 *   server:
 *     listen: "0.0.0.0:50053"        # host:port
 *     max_message_mb: 128            # gRPC send/receive limit
 *     worker_threads: 4              # request workers (0 = number of cores)
 *     ort_intra_threads: 0           # ONNX Runtime intra-op threads (0 = ORT default)
 *     ort_inter_threads: 1
 *     max_batch: 32                  # largest accepted batch_size
 *     png_level: 1                   # ISA-L level 0..3 for flat rows
 *     max_queue: 256                 # requests waiting for a worker; beyond: RESOURCE_EXHAUSTED
 *     drain_seconds: 10              # on SIGTERM, how long in-flight requests may finish
 *     unready_grace_seconds: 0       # on SIGTERM, /readyz 503 but still serving this long first
 *   capacity:
 *     max_models: 4
 *     max_memory_gb: 8               # may be fractional
 *     eviction_policy: lru           # lru | lfu | lfu_count (evict.h)
 *     lfu_half_life_minutes: 10      # lfu: the frequency score halves this often; > 0, may be fractional
 *     lfu_initial: 5                 # lfu: score of a model just loaded (log2(1 + uses) scale), 0..64
 *     min_residency_seconds: 30      # churn guard: a model loaded more recently is no eviction victim; 0 = off
 *     idle_unload_minutes: 30        # 0 disables; may be fractional
 *     idle_check_seconds: 60
 *     stats_report_seconds: 300
 *     load_retry_seconds: 10         # backoff before retrying a failed load
 *   models:
 *     <id>:
 *       model_path: models/a.onnx    # relative paths are relative to the config file
 *       background_dir: avatars/a/frames
 *       crop_rects_path: avatars/a/crop_rects.json
 *       num_frames: 100              # 0 or absent = all frames found
 *       preload: false
 *       pinned: false                # never evicted / idle-unloaded
 *       memory_estimate_mb: 500
 *       frame_order: loop            # loop | pingpong
 *       channel_order: bgr           # bgr | rgb (model output planes)
 *       paste_margin: 4              # canvas margin of 328; 0 = stretch
 *       max_concurrent_requests: 0   # > 0: more at once get RESOURCE_EXHAUSTED
 *       output_format: png           # png | jpeg | raw (a request may ask for another)
 *       jpeg_quality: 90             # 1..100
 *       paste_interpolation: cubic   # cubic | linear: canvas resizes of the paste-back
 *       visual_input:                # the server-built visual input (requests without one)
 *         margin: 4                  # canvas margin; absent = paste_margin (they must agree)
 *         mask: [5, 5, 310, 305]     # blacked-out part of the masked copy: OpenCV x, y, w, h
 *                                    # for a 320 input, scaled by S/320 for other sides
 *         interpolation: cubic       # cubic | linear (crop -> (S+2m)^2 resize)
 *         cache: auto                # auto | on | off: keep each frame's 8-bit input;
 *                                    # auto = on while it adds <= 25% to the frames' memory
 *       audio_encoder:               # optional: speech in for this model
 *         model_path: models/a_ave.onnx  # [B,1,80,16] or [B,80,16] mel window -> [B,512]
 *         kind: ave                  # the only kind: SyncTalk_2D's "ave" features
 *   audio:                           # speech in (ExtractAudioFeatures, RenderSpeech)
 *     max_seconds: 600               # longer audio is INVALID_ARGUMENT
 *   sessions:                        # live StreamSession calls
 *     max: 64                        # at once; more get RESOURCE_EXHAUSTED
 *     stall_timeout_s: 30            # a client that takes no frame this long: DEADLINE_EXCEEDED
 *   http:
 *     enabled: true                  # HTTP/1.1 listener: /metrics, /healthz, /readyz, gRPC-Web, demo page
 *     listen: "0.0.0.0:8053"
 *     cors_origins: []               # origins allowed cross-origin ("*" = any); [] = same-origin only
 *     web_root: /path/to/repo/web    # static files of the demo page (default: the source tree's web/)
 *     speech_wav: speech.wav         # optional: served at GET /speech.wav (the demo page's Play)
 *     websocket_ping_seconds: 20     # WebSocket /session keepalive: ping after this much silence
 *                                    # (0.1..3600); a peer silent for three of these is gone
 *
 *   auth:                            # optional; absent = no keys needed
 *     enabled: true
 *     keys:
 *       - name: tenant-a
 *         sha256: <64 hex>           # exactly one of sha256 | key_file | key_env
 *         models: [demo, "bob*"]     # ids or glob patterns this key may use
 *       - name: ops
 *         key_env: LIPSYNC_ADMIN_KEY
 *         admin: true                # every model, plus Load/Unload
 *   tls:                             # optional; absent = plaintext
 *     cert_file: server.crt
 *     key_file: server.key
 *     client_ca_file: ca.crt         # optional: require client certificates it signed
 *
 * Unknown keys and bad values are errors naming file, line, key and the
 * expected form. Model ids: 1..128 chars of [A-Za-z0-9_.-]. */
#ifndef LS_CONFIG_H
#define LS_CONFIG_H

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
    ls_format output_format; /* default PNG */
    int jpeg_quality;      /* default 90; 1..100 */
    ls_interp paste_interp; /* default cubic */
    ls_visual_config visual;
    char *encoder_path;    /* audio_encoder.model_path, resolved; NULL = no speech in */
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
    /* audio */
    double audio_max_seconds;   /* default 600; also the longest session */
    /* sessions */
    int sessions_max;           /* default 64: live StreamSession calls at once */
    double sessions_stall_seconds; /* default 30: a client not reading a frame this long ends its session */
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

void ls_config_free(ls_config *cfg);

#endif
