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

ls_code ls_reflection_answer(const ls_refl_index *ix, const uint8_t *req, size_t len, ls_buf *resp, ls_err *err) {
    static const uint8_t empty[1];
    refl_req *q = grpc__reflection__v1alpha__server_reflection_request__unpack(NULL, len, req ? req : empty);
    if (!q) {
        ls_err_set(err, LS_INVALID_ARGUMENT, "malformed message (not a grpc.reflection ServerReflectionRequest)");
        return LS_INVALID_ARGUMENT;
    }
    refl_resp r = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__FileDescriptorResponse files = GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ListServiceResponse list = GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ExtensionNumberResponse ext = GRPC__REFLECTION__V1ALPHA__EXTENSION_NUMBER_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ErrorResponse fail = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ServiceResponse *svc = NULL;
    Grpc__Reflection__V1alpha__ServiceResponse **svc_ptrs = NULL;
    ProtobufCBinaryData *blobs = NULL;
    char *seen = NULL;
    int *order = NULL;
    char msg[600];
    ls_code code = LS_OK;
    r.valid_host = q->host;
    r.original_request = q;

    int file = -1;
    const ls_refl_symbol *sym;
    switch (q->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        file = find_file(ix, q->file_by_filename);
        if (file < 0) {
            snprintf(msg, sizeof msg, "file not found: %.500s", q->file_by_filename);
            fail.error_code = LS_NOT_FOUND;
        }
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        sym = find_symbol(ix, q->file_containing_symbol);
        if (sym) {
            file = sym->file;
        } else {
            snprintf(msg, sizeof msg, "symbol not found: %.500s", q->file_containing_symbol);
            fail.error_code = LS_NOT_FOUND;
        }
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
        /* None of the served files extends anything. */
        const Grpc__Reflection__V1alpha__ExtensionRequest *e = q->file_containing_extension;
        snprintf(msg, sizeof msg, "extension not found: %.500s field %d", e && e->containing_type ? e->containing_type : "",
                 e ? e->extension_number : 0);
        fail.error_code = LS_NOT_FOUND;
        break;
    }
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        sym = find_symbol(ix, q->all_extension_numbers_of_type);
        if (sym && sym->kind == LS_REFL_MESSAGE) {
            ext.base_type_name = (char *)sym->name; /* no extension numbers: nothing extends it */
            r.message_response_case =
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            r.all_extension_numbers_response = &ext;
        } else {
            snprintf(msg, sizeof msg, "message type not found: %.500s", q->all_extension_numbers_of_type);
            fail.error_code = LS_NOT_FOUND;
        }
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        svc = calloc(ix->n_services + 1, sizeof *svc);
        svc_ptrs = calloc(ix->n_services + 1, sizeof *svc_ptrs);
        if (!svc || !svc_ptrs) goto oom;
        for (size_t i = 0; i < ix->n_services; i++) {
            grpc__reflection__v1alpha__service_response__init(&svc[i]);
            svc[i].name = (char *)ix->services[i];
            svc_ptrs[i] = &svc[i];
        }
        list.n_service = ix->n_services;
        list.service = svc_ptrs;
        r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        r.list_services_response = &list;
        break;
    default:
        snprintf(msg, sizeof msg, "unsupported reflection request (message_request field %d)",
                 (int)q->message_request_case);
        fail.error_code = STATUS_UNIMPLEMENTED;
        break;
    }

    if (file >= 0) {
        seen = calloc(ix->n_files + 1, 1);
        order = calloc(ix->n_files + 1, sizeof *order);
        blobs = calloc(ix->n_files + 1, sizeof *blobs);
        if (!seen || !order || !blobs) goto oom;
        size_t n = 0;
        with_imports(ix, file, seen, order, &n);
        for (size_t i = 0; i < n; i++) {
            blobs[i].data = (uint8_t *)ix->files[order[i]].data;
            blobs[i].len = ix->files[order[i]].len;
        }
        files.n_file_descriptor_proto = n;
        files.file_descriptor_proto = blobs;
        r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        r.file_descriptor_response = &files;
    } else if (fail.error_code) {
        fail.error_message = msg;
        r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        r.error_response = &fail;
    }

    size_t need = protobuf_c_message_get_packed_size(&r.base);
    resp->len = 0;
    if (ls_buf_reserve(resp, need) != 0) goto oom;
    resp->len = protobuf_c_message_pack(&r.base, resp->data);
    goto out;
oom:
    ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory answering a reflection request");
    code = LS_RESOURCE_EXHAUSTED;
out:
    free(svc);
    free(svc_ptrs);
    free(blobs);
    free(seen);
    free(order);
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
