/* fuzz_croprects.c - libFuzzer target: the crop-rectangle JSON parser.
 *
 * Any bytes go to ls_croprects_parse. On success every rectangle must obey
 * croprects.h (0 <= x1 < x2, 0 <= y1 < y2, coordinates bounded); on failure
 * the error is FAILED_PRECONDITION with a message and nothing is returned. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "croprects.h"

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_croprects: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ls_rect *rects = NULL;
    size_t n = 0;
    ls_err err = {.code = LS_OK, .msg = ""};
    int rc = ls_croprects_parse((const char *)data, size, &rects, &n, &err);
    if (rc != 0) {
        check(err.code == LS_FAILED_PRECONDITION, "FAILED_PRECONDITION on failure");
        check(err.msg[0] != 0, "a message on failure");
        check(rects == NULL, "no array on failure");
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        ls_rect r = rects[i];
        check(r.x1 >= 0 && r.y1 >= 0, "non-negative corner");
        check(r.x2 > r.x1 && r.y2 > r.y1, "non-empty rectangle");
        check(r.x2 <= 65535 && r.y2 <= 65535, "coordinates bounded");
    }
    free(rects);
    return 0;
}
