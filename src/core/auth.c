/* auth.c - see auth.h. SHA-256 and the constant-time compare come from
 * OpenSSL's libcrypto, which gRPC already links. */
#define _GNU_SOURCE
#include "auth.h"

#include <errno.h>
#include <fnmatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void ls_auth_hash(const char *key, size_t len, uint8_t out[32]) {
    unsigned int n = 32;
    EVP_Digest(key, len, out, &n, EVP_sha256(), NULL);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int ls_auth_parse_hex(const char *hex, uint8_t out[32]) {
    if (!hex || strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

const ls_auth_key *ls_auth_identify(const ls_auth *a, const char *authorization, ls_err *err) {
    if (!a || !a->enabled) return NULL;
    if (!authorization || !*authorization) {
        ls_err_set(err, LS_UNAUTHENTICATED, "missing API key: send metadata 'authorization: Bearer <key>'");
        return NULL;
    }
    if (strncasecmp(authorization, "Bearer ", 7) != 0) {
        ls_err_set(err, LS_UNAUTHENTICATED, "authorization metadata must be 'Bearer <key>'");
        return NULL;
    }
    const char *key = authorization + 7;
    uint8_t h[32];
    ls_auth_hash(key, strlen(key), h);
    /* Compare with every key, whatever matched: the time taken does not
     * depend on which key (if any) it was. */
    const ls_auth_key *found = NULL;
    for (size_t i = 0; i < a->n_keys; i++) {
        int same = CRYPTO_memcmp(h, a->keys[i].sha256, 32) == 0;
        if (same && !found) found = &a->keys[i];
    }
    if (!found) ls_err_set(err, LS_UNAUTHENTICATED, "unknown API key");
    return found;
}

int ls_auth_allows(const ls_auth_key *key, const char *model_id) {
    if (key->admin) return 1;
    for (size_t i = 0; i < key->n_models; i++)
        if (fnmatch(key->models[i], model_id, 0) == 0) return 1;
    return 0;
}

void ls_auth_free(ls_auth *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_keys; i++) {
        free(a->keys[i].name);
        for (size_t j = 0; j < a->keys[i].n_models; j++) free(a->keys[i].models[j]);
        free(a->keys[i].models);
    }
    free(a->keys);
    memset(a, 0, sizeof *a);
}

int ls_auth_hash_file(const char *path, uint8_t out[32], char *msg, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) return snprintf(msg, cap, "cannot open: %s", strerror(errno)), -1;
    char line[1024];
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    size_t n = got ? strlen(line) : 0;
    while (n && strchr("\n\r \t", line[n - 1])) n--;
    if (n < 16) return snprintf(msg, cap, got ? "expected a key of at least 16 characters" : "empty"), -1;
    ls_auth_hash(line, n, out);
    return 0;
}
