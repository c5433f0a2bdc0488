/* reflection.h - gRPC server reflection (grpc.reflection.v1alpha and v1
 * ServerReflection/ServerReflectionInfo), so generic tools (grpcurl, Postman,
 * a client that builds its message classes at run time) can discover the API.
 *
 * What it serves is an index of serialized FileDescriptorProtos generated at
 * build time: protoc-c --descriptor_set_out --include_imports over every
 * .proto the server answers for, turned into C arrays by
 * tools/embed_descriptors.py (build/gen/descriptors.c, never committed). The
 * index knows each file's name, bytes and imports, every fully qualified
 * symbol (messages, nested messages, enums, enum values, fields, services,
 * methods, extensions) and the services.
 *
 * Knows protobuf, not gRPC or models: the stream handler talks to the
 * transport through ls_stream (transport.h). Both versions of the protocol
 * are the same wire format, so the v1alpha messages serve both paths. */
#ifndef LS_REFLECTION_H
#define LS_REFLECTION_H

#include "common.h"
#include "transport.h"

typedef enum { LS_REFL_MESSAGE, LS_REFL_ENUM, LS_REFL_SERVICE, LS_REFL_OTHER } ls_refl_kind;

typedef struct {
    const char *name;         /* as imported, e.g. "grpc/health/v1/health.proto" */
    const uint8_t *data;      /* serialized google.protobuf.FileDescriptorProto */
    size_t len;
    const int *deps;          /* indexes (into files) of the files it imports */
    size_t n_deps;
} ls_refl_file;

typedef struct {
    const char *name;         /* fully qualified, no leading dot */
    int file;                 /* index into files */
    ls_refl_kind kind;
} ls_refl_symbol;

typedef struct {
    const ls_refl_file *files;
    size_t n_files;
    const ls_refl_symbol *symbols; /* sorted by strcmp of name */
    size_t n_symbols;
    const char *const *services;   /* fully qualified service names */
    size_t n_services;
} ls_refl_index;

/* Every file the server answers for (generated at build time). */
extern const ls_refl_index ls_refl_builtin;

/* Answer one ServerReflectionRequest (req, len) with a serialized
 * ServerReflectionResponse in *resp (replaced). A file is answered together
 * with everything it imports, transitively (requested file first). Unknown
 * files and symbols get an error_response with NOT_FOUND, a request without
 * a known kind UNIMPLEMENTED. Returns LS_OK, or INVALID_ARGUMENT (req is not
 * a ServerReflectionRequest) / RESOURCE_EXHAUSTED with err set. */
ls_code ls_reflection_answer(const ls_refl_index *ix, const uint8_t *req, size_t len, ls_buf *resp, ls_err *err);

/* Stream handler for both ServerReflectionInfo paths (ctx unused): answers
 * each request on the stream in order until the client half-closes. */
ls_code ls_reflection_info(void *ctx, const ls_call_info *call, ls_stream *s, ls_err *err);

#endif
