/* auth.h - tenant API keys.
 *
 * A key arrives as `authorization: Bearer <key>` metadata. Keys are never
 * stored: the config holds their SHA-256 (or names a file / environment
 * variable holding the key, hashed at start-up). Each key may use a list of
 * model ids or glob patterns (fnmatch); an admin key may use every model and
 * also Load/Unload. Lookup hashes the presented key and compares it with
 * every configured hash in constant time, so neither the match position nor
 * partial matches leak through timing.
 *
 * The service asks two questions: who is this (ls_auth_identify) and may they
 * use this model (ls_auth_allows). Denials for models never say whether the
 * model exists. */
#ifndef LS_AUTH_H
#define LS_AUTH_H

#include "common.h"

typedef struct {
    char *name;          /* for logs */
    uint8_t sha256[32];
    char **models;       /* patterns */
    size_t n_models;
    int admin;
} ls_auth_key;

typedef struct {
    int enabled;
    ls_auth_key *keys;
    size_t n_keys;
} ls_auth;

/* Parse 64 hex characters; -1 if malformed. */
int ls_auth_parse_hex(const char *hex, uint8_t out[32]);
void ls_auth_hash(const char *key, size_t len, uint8_t out[32]);

/* Who presented this authorization header value (may be NULL)? Returns the
 * key, or NULL with UNAUTHENTICATED. With auth disabled returns NULL and no
 * error: the caller treats NULL + enabled==0 as "everything allowed". */
const ls_auth_key *ls_auth_identify(const ls_auth *a, const char *authorization, ls_err *err);

/* May key use model id? (admin: always). */
int ls_auth_allows(const ls_auth_key *key, const char *model_id);

void ls_auth_free(ls_auth *a);

/* The key on the first line of a file (trailing whitespace dropped, at least
 * 16 characters), hashed into out: 0, or -1 with what is wrong in msg. */
int ls_auth_hash_file(const char *path, uint8_t out[32], char *msg, size_t cap);

#endif
