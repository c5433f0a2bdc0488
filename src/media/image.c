/* image.c - decode PNG (libspng) and JPEG (libjpeg-turbo) into packed RGB24.
 *
 * Both decoders are asked to produce RGB directly, so gray, palette, alpha
 * and 16-bit PNGs and gray/YCbCr JPEGs need no conversion code here. The
 * format is chosen by magic bytes because avatar directories in the wild
 * contain frames whose extension does not match their content.
 *
 * Every failure is FAILED_PRECONDITION: a frame that does not decode is a
 * problem with the avatar's data, not with the request that touched it. */
#define _GNU_SOURCE
#include "image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <spng.h>
#include <turbojpeg.h>

/* Refuse anything larger per side before allocating: a corrupt or hostile
 * header can claim 2^31 x 2^31 pixels. Video frames are far below this. */
#define LS_IMAGE_MAX_SIDE 16384

/* Largest ancillary PNG chunk we let libspng allocate for (16 MiB). */
#define LS_PNG_CHUNK_MAX ((size_t)16 << 20)

/* A compressed frame larger than this is not a frame (256 MiB). */
#define LS_IMAGE_MAX_FILE ((size_t)256 << 20)

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static int check_dims(const char *what, long w, long h, ls_err *err) {
    if (w <= 0 || h <= 0 || w > LS_IMAGE_MAX_SIDE || h > LS_IMAGE_MAX_SIDE)
        return ls_err_set(err, LS_FAILED_PRECONDITION,
                          "%s: unsupported dimensions %ldx%ld (max %d per side)", what, w, h,
                          LS_IMAGE_MAX_SIDE);
    return 0;
}

static int decode_png(const uint8_t *data, size_t len, ls_image *out, ls_err *err) {
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return ls_err_set(err, LS_FAILED_PRECONDITION, "PNG decode failed: out of memory");

    uint8_t *rgb = NULL;
    struct spng_ihdr ihdr;
    size_t size = 0;
    int rc;

    /* The image limits make libspng itself reject oversize headers, so the
     * IHDR read below is already sane; check_dims is the belt to those
     * braces. The chunk limits bound what ancillary chunks (text, ICC
     * profiles; compressed ones are inflated) may allocate, as libspng's
     * documentation asks for untrusted input; they do not apply to IDAT. */
    if ((rc = spng_set_image_limits(ctx, LS_IMAGE_MAX_SIDE, LS_IMAGE_MAX_SIDE)) != 0 ||
        (rc = spng_set_chunk_limits(ctx, LS_PNG_CHUNK_MAX, 4 * LS_PNG_CHUNK_MAX)) != 0 ||
        (rc = spng_set_png_buffer(ctx, data, len)) != 0 ||
        (rc = spng_get_ihdr(ctx, &ihdr)) != 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "PNG decode failed: %s", spng_strerror(rc));
        goto fail;
    }
    if (check_dims("PNG decode failed", (long)ihdr.width, (long)ihdr.height, err) != 0) goto fail;

    /* SPNG_FMT_RGB8 converts every PNG colour type and bit depth; alpha is
     * dropped (not composited), which is what a video frame wants. */
    if ((rc = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &size)) != 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "PNG decode failed: %s", spng_strerror(rc));
        goto fail;
    }
    if (size != (size_t)ihdr.width * ihdr.height * 3) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "PNG decode failed: unexpected RGB8 size %zu",
                   size);
        goto fail;
    }
    rgb = malloc(size);
    if (!rgb) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "PNG decode failed: out of memory (%zu bytes)",
                   size);
        goto fail;
    }
    if ((rc = spng_decode_image(ctx, rgb, size, SPNG_FMT_RGB8, 0)) != 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "PNG decode failed: %s", spng_strerror(rc));
        goto fail;
    }
    spng_ctx_free(ctx);
    out->w = (int)ihdr.width;
    out->h = (int)ihdr.height;
    out->rgb = rgb;
    return 0;

fail:
    free(rgb);
    spng_ctx_free(ctx);
    return -1;
}

static int decode_jpeg(const uint8_t *data, size_t len, ls_image *out, ls_err *err) {
    /* TurboJPEG's length parameter is unsigned long; on LP64 that is size_t,
     * but keep the check for 32-bit builds. */
    if ((unsigned long)len != len)
        return ls_err_set(err, LS_FAILED_PRECONDITION, "JPEG decode failed: input too large");

    tjhandle tj = tjInitDecompress();
    if (!tj)
        return ls_err_set(err, LS_FAILED_PRECONDITION, "JPEG decode failed: %s",
                          tjGetErrorStr2(NULL));

    uint8_t *rgb = NULL;
    int w = 0, h = 0, subsamp = 0, colorspace = 0;
    if (tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &subsamp, &colorspace) != 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "JPEG decode failed: %s", tjGetErrorStr2(tj));
        goto fail;
    }
    if (check_dims("JPEG decode failed", w, h, err) != 0) goto fail;

    size_t size = (size_t)w * (size_t)h * 3;
    rgb = malloc(size);
    if (!rgb) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "JPEG decode failed: out of memory (%zu bytes)",
                   size);
        goto fail;
    }
    /* Default (accurate integer) DCT and fancy upsampling: frames are decoded
     * once per avatar load, so quality wins over the few ms FASTDCT saves.
     * A warning (e.g. "premature end of JPEG file") also returns -1: a
     * truncated frame would otherwise be padded with grey and served. */
    if (tjDecompress2(tj, data, (unsigned long)len, rgb, w, 0, h, TJPF_RGB, 0) != 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "JPEG decode failed: %s", tjGetErrorStr2(tj));
        goto fail;
    }
    tjDestroy(tj);
    out->w = w;
    out->h = h;
    out->rgb = rgb;
    return 0;

fail:
    free(rgb);
    tjDestroy(tj);
    return -1;
}

int ls_image_decode_mem(const uint8_t *data, size_t len, ls_image *out, ls_err *err) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (!data || len == 0)
        return ls_err_set(err, LS_FAILED_PRECONDITION, "image decode failed: empty input");
    if (len >= sizeof png_magic && memcmp(data, png_magic, sizeof png_magic) == 0)
        return decode_png(data, len, out, err);
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return decode_jpeg(data, len, out, err);
    return ls_err_set(err, LS_FAILED_PRECONDITION,
                      "image decode failed: unrecognised format (not PNG or JPEG)");
}

/* Read a whole file into a malloc'd buffer. Regular files only: a FIFO or a
 * directory given as a frame path should fail clearly, not block or misread. */
static int read_file(const char *path, uint8_t **data, size_t *len, ls_err *err) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ls_err_set(err, LS_FAILED_PRECONDITION, "%s: cannot open: %s", path,
                          strerror(errno));

    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size <= 0) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s: empty file", path);
        goto fail;
    }
    if ((unsigned long long)st.st_size > LS_IMAGE_MAX_FILE) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s: file too large (%lld bytes)", path,
                   (long long)st.st_size);
        goto fail;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size);
    if (!buf) {
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s: out of memory (%zu bytes)", path, size);
        goto fail;
    }
    size_t got = fread(buf, 1, size, f);
    if (got != size) {
        /* A short read is a file truncated while we read it, or an I/O error. */
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s: read failed: %s", path,
                   ferror(f) ? strerror(errno) : "short read");
        free(buf);
        goto fail;
    }
    fclose(f);
    *data = buf;
    *len = size;
    return 0;

fail:
    fclose(f);
    return -1;
}

int ls_image_decode_file(const char *path, ls_image *out, ls_err *err) {
    out->w = out->h = 0;
    out->rgb = NULL;
    uint8_t *data;
    size_t len;
    if (read_file(path, &data, &len, err) != 0) return -1;
    int rc = ls_image_decode_mem(data, len, out, err);
    free(data);
    if (rc != 0) return ls_err_prefix(err, "%s", path);
    return 0;
}

int ls_image_probe_file(const char *path, int *w, int *h, ls_err *err) {
    *w = *h = 0;
    /* PNG: the size sits in IHDR, which must be the first chunk, so 24 bytes
     * of the file are enough. */
    uint8_t head[24];
    FILE *f = fopen(path, "rb");
    if (!f) return ls_err_set(err, LS_FAILED_PRECONDITION, "%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got == sizeof head && memcmp(head, png_magic, 8) == 0) {
        if (memcmp(head + 12, "IHDR", 4) != 0)
            return ls_err_set(err, LS_FAILED_PRECONDITION, "%s: PNG without IHDR first", path);
        long pw = (long)((uint32_t)head[16] << 24 | (uint32_t)head[17] << 16 | (uint32_t)head[18] << 8 | head[19]);
        long ph = (long)((uint32_t)head[20] << 24 | (uint32_t)head[21] << 16 | (uint32_t)head[22] << 8 | head[23]);
        if (check_dims("PNG header", pw, ph, err) != 0) return ls_err_prefix(err, "%s", path);
        *w = (int)pw;
        *h = (int)ph;
        return 0;
    }
    /* JPEG: the frame header can sit anywhere after the metadata; let
     * TurboJPEG find it in the whole (small) file. */
    uint8_t *data;
    size_t len;
    if (read_file(path, &data, &len, err) != 0) return -1;
    int rc = -1;
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) {
        tjhandle tj = tjInitDecompress();
        int jw = 0, jh = 0, subsamp = 0, cs = 0;
        if (tj && tjDecompressHeader3(tj, data, (unsigned long)len, &jw, &jh, &subsamp, &cs) == 0 &&
            check_dims("JPEG header", jw, jh, err) == 0) {
            *w = jw;
            *h = jh;
            rc = 0;
        } else if (tj) {
            ls_err_set(err, LS_FAILED_PRECONDITION, "%s: JPEG header: %s", path, tjGetErrorStr2(tj));
        }
        if (tj) tjDestroy(tj);
    } else {
        ls_err_set(err, LS_FAILED_PRECONDITION, "%s: unrecognised format (not PNG or JPEG)", path);
    }
    free(data);
    return rc;
}

int ls_jpeg_encode_rgb(const uint8_t *rgb, int w, int h, int quality, ls_buf *out, ls_err *err) {
    if (!rgb || w <= 0 || h <= 0 || quality < 1 || quality > 100)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "jpeg encode: bad image %dx%d or quality %d", w, h, quality);
    tjhandle tj = tjInitCompress();
    if (!tj) return ls_err_set(err, LS_INTERNAL, "jpeg encode: %s", tjGetErrorStr2(NULL));
    /* Compress straight into our buffer: tjBufSize is the worst case, so
     * TurboJPEG never reallocates it (TJFLAG_NOREALLOC). */
    unsigned long cap = tjBufSize(w, h, TJSAMP_420);
    int rc = 0;
    if (ls_buf_reserve(out, cap) != 0) {
        rc = ls_err_set(err, LS_RESOURCE_EXHAUSTED, "jpeg encode: out of memory");
    } else {
        unsigned char *dst = out->data + out->len;
        unsigned long len = cap;
        if (tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &dst, &len, TJSAMP_420, quality, TJFLAG_NOREALLOC) != 0)
            rc = ls_err_set(err, LS_INTERNAL, "jpeg encode: %s", tjGetErrorStr2(tj));
        else
            out->len += len;
    }
    tjDestroy(tj);
    return rc;
}

void ls_image_free(ls_image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}
