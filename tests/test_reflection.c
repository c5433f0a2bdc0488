/* test_reflection.c - unit tests of the reflection answers (reflection.h)
 * without a server: a made-up index whose files import each other (which
 * the served protos do not), and checks of the index generated at build
 * time. Prints one line per check and a final "N passed, M failed" line. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "reflection.h"

static int g_pass, g_fail;

static void check_(int ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check_(int ok, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s - ", ok ? "ok" : "FAIL");
    vprintf(fmt, ap);
    va_end(ap);
    if (ok) {
        printf("\n");
        g_pass++;
    } else {
        printf(" (line %d)\n", line);
        g_fail++;
    }
    fflush(stdout);
}
#define CHECK(cond, ...) check_((cond) ? 1 : 0, __LINE__, __VA_ARGS__)

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest req_t;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse resp_t;

/* a.proto imports b.proto and c.proto, b.proto imports c.proto (a diamond);
 * d.proto stands alone. The "descriptors" are one byte each: the answers
 * are about which files, in which order. */
static const uint8_t A[] = {'A'}, B[] = {'B'}, C[] = {'C'}, D[] = {'D'};
static const int a_deps[] = {1, 2}, b_deps[] = {2};
static const ls_refl_file fake_files[] = {
    {"a.proto", A, 1, a_deps, 2},
    {"b.proto", B, 1, b_deps, 1},
    {"c.proto", C, 1, NULL, 0},
    {"d.proto", D, 1, NULL, 0},
};
static const ls_refl_symbol fake_symbols[] = {
    {"p.A", 0, LS_REFL_MESSAGE},   {"p.A.f", 0, LS_REFL_OTHER}, {"p.B", 1, LS_REFL_MESSAGE},
    {"p.C", 2, LS_REFL_ENUM},      {"p.Svc", 0, LS_REFL_SERVICE}, {"p.Svc.Do", 0, LS_REFL_OTHER},
    {"q.D", 3, LS_REFL_MESSAGE},
};
static const char *const fake_services[] = {"p.Svc"};
static const ls_refl_index fake = {fake_files, 4, fake_symbols, 7, fake_services, 1};

/* Pack req, answer it, unpack the response (caller frees). */
static resp_t *ask(const ls_refl_index *ix, const req_t *q) {
    uint8_t buf[1024];
    size_t n = protobuf_c_message_pack(&q->base, buf);
    ls_buf out = {0};
    ls_err err;
    ls_code code = ls_reflection_answer(ix, buf, n, &out, &err);
    resp_t *r = code == LS_OK ? grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, out.len, out.data)
                              : NULL;
    if (code != LS_OK) printf("# answer failed: %s\n", err.msg);
    ls_buf_free(&out);
    return r;
}

static void free_resp(resp_t *r) {
    if (r) grpc__reflection__v1alpha__server_reflection_response__free_unpacked(r, NULL);
}

/* The files of a file_descriptor_response as a string of their bytes ("ABC"),
 * or "error N", or "?". */
static void files_of(const resp_t *r, char *out, size_t size) {
    if (!r) {
        snprintf(out, size, "?");
    } else if (r->message_response_case ==
               GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE) {
        snprintf(out, size, "error %d", r->error_response->error_code);
    } else if (r->message_response_case ==
               GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE) {
        size_t k = 0;
        for (size_t i = 0; i < r->file_descriptor_response->n_file_descriptor_proto && k + 1 < size; i++)
            for (size_t j = 0; j < r->file_descriptor_response->file_descriptor_proto[i].len && k + 1 < size; j++)
                out[k++] = (char)r->file_descriptor_response->file_descriptor_proto[i].data[j];
        out[k] = 0;
    } else {
        snprintf(out, size, "case %d", (int)r->message_response_case);
    }
}

static void by_symbol(const char *symbol, const char *want) {
    req_t q = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    q.message_request_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    q.file_containing_symbol = (char *)symbol;
    resp_t *r = ask(&fake, &q);
    char got[64];
    files_of(r, got, sizeof got);
    CHECK(!strcmp(got, want), "file_containing_symbol %s -> %s (got %s)", symbol, want, got);
    free_resp(r);
}

static void by_file(const char *name, const char *want) {
    req_t q = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    q.message_request_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    q.file_by_filename = (char *)name;
    resp_t *r = ask(&fake, &q);
    char got[64];
    files_of(r, got, sizeof got);
    CHECK(!strcmp(got, want), "file_by_filename %s -> %s (got %s)", name, want, got);
    free_resp(r);
}

static void test_fake_index(void) {
    /* Imports come along, transitively, each once, requested file first. */
    by_symbol("p.A", "ABC");
    by_symbol("p.A.f", "ABC");
    by_symbol(".p.Svc.Do", "ABC");
    by_symbol("p.B", "BC");
    by_symbol("p.C", "C");
    by_symbol("q.D", "D");
    by_symbol("p", "error 5");
    by_symbol("p.Z", "error 5");
    by_symbol("", "error 5");
    by_file("a.proto", "ABC");
    by_file("b.proto", "BC");
    by_file("d.proto", "D");
    by_file("e.proto", "error 5");

    req_t q = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    q.host = "h";
    q.message_request_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    q.list_services = "*";
    resp_t *r = ask(&fake, &q);
    CHECK(r && r->list_services_response && r->list_services_response->n_service == 1 &&
              !strcmp(r->list_services_response->service[0]->name, "p.Svc"),
          "list_services names the one service");
    CHECK(r && !strcmp(r->valid_host, "h") && r->original_request &&
              !strcmp(r->original_request->list_services, "*"),
          "host and original request echoed");
    free_resp(r);

    q.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    q.all_extension_numbers_of_type = "p.A";
    r = ask(&fake, &q);
    CHECK(r && r->all_extension_numbers_response &&
              !strcmp(r->all_extension_numbers_response->base_type_name, "p.A") &&
              r->all_extension_numbers_response->n_extension_number == 0,
          "all_extension_numbers_of_type of a message: none");
    free_resp(r);
    q.all_extension_numbers_of_type = "p.C"; /* an enum */
    r = ask(&fake, &q);
    char got[64];
    files_of(r, got, sizeof got);
    CHECK(!strcmp(got, "error 5"), "all_extension_numbers_of_type of an enum: NOT_FOUND (got %s)", got);
    free_resp(r);

    req_t empty = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    r = ask(&fake, &empty);
    files_of(r, got, sizeof got);
    CHECK(!strcmp(got, "error 12"), "a request of no kind: UNIMPLEMENTED (got %s)", got);
    free_resp(r);

    static const uint8_t junk[] = {0xff, 0xff, 0xff};
    ls_buf out = {0};
    ls_err err;
    CHECK(ls_reflection_answer(&fake, junk, sizeof junk, &out, &err) == LS_INVALID_ARGUMENT,
          "malformed request: INVALID_ARGUMENT");
    CHECK(ls_reflection_answer(&fake, NULL, 0, &out, &err) == LS_OK, "empty request bytes are a request of no kind");
    ls_buf_free(&out);
}

static void test_builtin_index(void) {
    const ls_refl_index *ix = &ls_refl_builtin;
    int sorted = 1, files_ok = 1;
    for (size_t i = 1; i < ix->n_symbols; i++)
        if (strcmp(ix->symbols[i - 1].name, ix->symbols[i].name) >= 0) sorted = 0;
    for (size_t i = 0; i < ix->n_symbols; i++)
        if (ix->symbols[i].file < 0 || (size_t)ix->symbols[i].file >= ix->n_files) files_ok = 0;
    CHECK(sorted, "built-in symbols strictly sorted (%zu symbols)", ix->n_symbols);
    CHECK(files_ok, "built-in symbols point at files");
    const char *want[] = {"multitenant.MultiTenantLipSync", "grpc.health.v1.Health",
                          "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"};
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        int listed = 0;
        for (size_t i = 0; i < ix->n_services; i++) listed |= !strcmp(ix->services[i], want[w]);
        const ls_refl_symbol *s = NULL;
        for (size_t i = 0; i < ix->n_symbols; i++)
            if (!strcmp(ix->symbols[i].name, want[w])) s = &ix->symbols[i];
        CHECK(listed && s && s->kind == LS_REFL_SERVICE, "built-in index serves %s", want[w]);
    }
    int found = 0;
    for (size_t i = 0; i < ix->n_files; i++)
        if (!strcmp(ix->files[i].name, "multitenant.proto") && ix->files[i].len > 100) found = 1;
    CHECK(found, "built-in index holds multitenant.proto");
}

int main(void) {
    test_fake_index();
    test_builtin_index();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
