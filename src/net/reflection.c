/* reflection.c - see reflection.h. */
#include "reflection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1alpha/reflection.pb-c.h"

/* gRPC's UNIMPLEMENTED; ls_code has no name for it (nothing below the
 * transport needs one). */
#define STATUS_UNIMPLEMENTED 12

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest refl_req;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse refl_resp;

static int cmp_symbol(const void *key, const void *elem) {
    return strcmp(key, ((const ls_refl_symbol *)elem)->name);
}

static const ls_refl_symbol *find_symbol(const ls_refl_index *ix, const char *name) {
    if (!name || !ix->n_symbols) return NULL;
    /* A client may write the name the way a .proto refers to it: ".pkg.Msg". */
    if (name[0] == '.') name++;
    return bsearch(name, ix->symbols, ix->n_symbols, sizeof *ix->symbols, cmp_symbol);
}

static int find_file(const ls_refl_index *ix, const char *name) {
    for (size_t i = 0; name && i < ix->n_files; i++)
        if (!strcmp(ix->files[i].name, name)) return (int)i;
    return -1;
}

/* File f, then what it imports, depth first, each file once. */
static void with_imports(const ls_refl_index *ix, int f, char *seen, int *order, size_t *n) {
    if (f < 0 || (size_t)f >= ix->n_files || seen[f]) return;
    seen[f] = 1;
    order[(*n)++] = f;
    for (size_t i = 0; i < ix->files[f].n_deps; i++) with_imports(ix, ix->files[f].deps[i], seen, order, n);
}

/* A requested name for an error message. protobuf-c never leaves a string
 * of the request's oneof NULL, but gcc's -Wformat-truncation cannot know
 * that; "(null)" is what glibc's printf would show. */
static const char *shown(const char *s) { return s ? s : "(null)"; }

/* One answer under construction: the response and the parts it points to,
 * which live on the stack or the heap until it has been packed. */
typedef struct {
    refl_resp r;
    Grpc__Reflection__V1alpha__FileDescriptorResponse files;
    Grpc__Reflection__V1alpha__ListServiceResponse list;
    Grpc__Reflection__V1alpha__ExtensionNumberResponse ext;
    Grpc__Reflection__V1alpha__ErrorResponse fail;
    Grpc__Reflection__V1alpha__ServiceResponse *svc;
    Grpc__Reflection__V1alpha__ServiceResponse **svc_ptrs;
    ProtobufCBinaryData *blobs;
    char *seen;
    int *order;
    char msg[600];
} answer;

/* ListServices: every served service by name. -1 when out of memory. */
static int list_services(const ls_refl_index *ix, answer *a) {
    a->svc = calloc(ix->n_services + 1, sizeof *a->svc);
    a->svc_ptrs = calloc(ix->n_services + 1, sizeof *a->svc_ptrs);
    if (!a->svc || !a->svc_ptrs) return -1;
    for (size_t i = 0; i < ix->n_services; i++) {
        grpc__reflection__v1alpha__service_response__init(&a->svc[i]);
        a->svc[i].name = (char *)ix->services[i];
        a->svc_ptrs[i] = &a->svc[i];
    }
    a->list.n_service = ix->n_services;
    a->list.service = a->svc_ptrs;
    a->r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    a->r.list_services_response = &a->list;
    return 0;
}

/* What q asks for: a file index to send (with its imports), or a response
 * filled in here, or an error in a->fail (error_code 0 = none). -2 when out
 * of memory, else the file index or -1. */
static int resolve(const ls_refl_index *ix, const refl_req *q, answer *a) {
    int file = -1;
    const ls_refl_symbol *sym;
    switch (q->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        file = find_file(ix, q->file_by_filename);
        if (file < 0) {
            snprintf(a->msg, sizeof a->msg, "file not found: %.500s", shown(q->file_by_filename));
            a->fail.error_code = LS_NOT_FOUND;
        }
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        sym = find_symbol(ix, q->file_containing_symbol);
        if (sym) {
            file = sym->file;
        } else {
            snprintf(a->msg, sizeof a->msg, "symbol not found: %.500s", q->file_containing_symbol);
            a->fail.error_code = LS_NOT_FOUND;
        }
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
        /* None of the served files extends anything. */
        const Grpc__Reflection__V1alpha__ExtensionRequest *e = q->file_containing_extension;
        snprintf(a->msg, sizeof a->msg, "extension not found: %.500s field %d",
                 e && e->containing_type ? e->containing_type : "", e ? e->extension_number : 0);
        a->fail.error_code = LS_NOT_FOUND;
        break;
    }
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        sym = find_symbol(ix, q->all_extension_numbers_of_type);
        if (sym && sym->kind == LS_REFL_MESSAGE) {
            a->ext.base_type_name = (char *)sym->name; /* no extension numbers: nothing extends it */
            a->r.message_response_case =
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            a->r.all_extension_numbers_response = &a->ext;
        } else {
            snprintf(a->msg, sizeof a->msg, "message type not found: %.500s", q->all_extension_numbers_of_type);
            a->fail.error_code = LS_NOT_FOUND;
        }
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        if (list_services(ix, a) != 0) return -2;
        break;
    default:
        snprintf(a->msg, sizeof a->msg, "unsupported reflection request (message_request field %d)",
                 (int)q->message_request_case);
        a->fail.error_code = STATUS_UNIMPLEMENTED;
        break;
    }
    return file;
}

/* The response for file: it and what it imports, depth first. -1 when out
 * of memory. */
static int attach_files(const ls_refl_index *ix, int file, answer *a) {
    a->seen = calloc(ix->n_files + 1, 1);
    a->order = calloc(ix->n_files + 1, sizeof *a->order);
    a->blobs = calloc(ix->n_files + 1, sizeof *a->blobs);
    if (!a->seen || !a->order || !a->blobs) return -1;
    size_t n = 0;
    with_imports(ix, file, a->seen, a->order, &n);
    for (size_t i = 0; i < n; i++) {
        a->blobs[i].data = (uint8_t *)ix->files[a->order[i]].data;
        a->blobs[i].len = ix->files[a->order[i]].len;
    }
    a->files.n_file_descriptor_proto = n;
    a->files.file_descriptor_proto = a->blobs;
    a->r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    a->r.file_descriptor_response = &a->files;
    return 0;
}

/* The error set by resolve, as the response. */
static void attach_error(answer *a) {
    a->fail.error_message = a->msg;
    a->r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    a->r.error_response = &a->fail;
}

static void answer_free(answer *a) {
    free(a->svc);
    free(a->svc_ptrs);
    free(a->blobs);
    free(a->seen);
    free(a->order);
}

/* parse -> resolve (what is asked) -> attach (files or error) -> pack. */
ls_code ls_reflection_answer(const ls_refl_index *ix, const uint8_t *req, size_t len, ls_buf *resp, ls_err *err) {
    static const uint8_t empty[1];
    refl_req *q = grpc__reflection__v1alpha__server_reflection_request__unpack(NULL, len, req ? req : empty);
    if (!q) {
        ls_err_set(err, LS_INVALID_ARGUMENT, "malformed message (not a grpc.reflection ServerReflectionRequest)");
        return LS_INVALID_ARGUMENT;
    }
    answer a = {.r = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT,
                .files = GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT,
                .list = GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT,
                .ext = GRPC__REFLECTION__V1ALPHA__EXTENSION_NUMBER_RESPONSE__INIT,
                .fail = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT};
    a.r.valid_host = q->host;
    a.r.original_request = q;
    ls_code code = LS_OK;

    int file = resolve(ix, q, &a);
    int rc = file == -2 ? -1 : 0;
    if (rc == 0 && file >= 0) rc = attach_files(ix, file, &a);
    else if (rc == 0 && a.fail.error_code) attach_error(&a);
    if (rc == 0) {
        size_t need = protobuf_c_message_get_packed_size(&a.r.base);
        resp->len = 0;
        rc = ls_buf_reserve(resp, need);
        if (rc == 0) resp->len = protobuf_c_message_pack(&a.r.base, resp->data);
    }
    if (rc != 0) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory answering a reflection request");
        code = LS_RESOURCE_EXHAUSTED;
    }
    answer_free(&a);
    grpc__reflection__v1alpha__server_reflection_request__free_unpacked(q, NULL);
    return code;
}

ls_code ls_reflection_info(void *ctx, const ls_call_info *call, ls_stream *s, ls_err *err) {
    (void)ctx;
    (void)call;
    ls_buf in = {0}, out = {0};
    ls_code code = LS_OK;
    for (;;) {
        int got = ls_stream_recv(s, &in);
        if (got == 0) break; /* the client is done asking */
        if (got < 0) {
            if (ls_stream_stopping(s))
                ls_err_set(err, LS_UNAVAILABLE, "server shutting down");
            else
                ls_err_set(err, LS_CANCELLED, "cancelled by the client");
            code = err->code;
            break;
        }
        code = ls_reflection_answer(&ls_refl_builtin, in.data, in.len, &out, err);
        if (code != LS_OK) break;
        if (ls_stream_send(s, out.data, out.len) != 0) {
            ls_err_set(err, LS_CANCELLED, "cancelled while answering");
            code = err->code;
            break;
        }
    }
    ls_buf_free(&in);
    ls_buf_free(&out);
    return code;
}
