/* video.c - the H.264 encoder of a stream (OpenH264). See video.h. */
#include "video.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wels/codec_api.h>

struct ls_video {
    ISVCEncoder *enc;
    ls_video_opts o;
    int64_t frames;
    int want_key;
    char codec[16];
};

size_t ls_i420_bytes(int w, int h) { return (size_t)w * (size_t)h + 2 * (size_t)(w / 2) * (size_t)(h / 2); }

/* The lowest level of the three we use whose frame size and macroblock rate
 * (at fps) hold the picture (H.264 table A-1). */
static ELevelIdc level_for(int w, int h, int fps, int *code) {
    long mbs = (long)((w + 15) / 16) * ((h + 15) / 16);
    if (mbs <= 3600 && mbs * fps <= 108000) {
        *code = 31;
        return LEVEL_3_1;
    }
    if (mbs <= 8192 && mbs * fps <= 245760) {
        *code = 40;
        return LEVEL_4_0;
    }
    *code = 51;
    return LEVEL_5_1;
}

static int check_opts(const ls_video_opts *o, ls_err *err) {
    if (o->bitrate_kbps < LS_VIDEO_MIN_KBPS || o->bitrate_kbps > LS_VIDEO_MAX_KBPS)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "h264: bitrate %d kbps: expected %d..%d", o->bitrate_kbps,
                          LS_VIDEO_MIN_KBPS, LS_VIDEO_MAX_KBPS);
    if (o->keyframe_interval < 1 || o->keyframe_interval > LS_VIDEO_MAX_KEYINT)
        return ls_err_set(err, LS_INVALID_ARGUMENT, "h264: key frame interval %d frames: expected 1..%d",
                          o->keyframe_interval, LS_VIDEO_MAX_KEYINT);
    return 0;
}

ls_video *ls_video_open(const ls_video_opts *o, ls_err *err) {
    if (o->width < 16 || o->height < 16 || o->width % 2 || o->height % 2 || o->width > 4096 || o->height > 2304) {
        ls_err_set(err, LS_INVALID_ARGUMENT, "h264: frame size %dx%d: expected even sides, 16..4096 x 16..2304",
                   o->width, o->height);
        return NULL;
    }
    if (check_opts(o, err) != 0) return NULL;
    assert(o->fps > 0);
    ls_video *v = calloc(1, sizeof *v);
    if (!v) {
        ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for an h264 encoder");
        return NULL;
    }
    v->o = *o;
    if (WelsCreateSVCEncoder(&v->enc) != 0 || !v->enc) {
        free(v);
        ls_err_set(err, LS_INTERNAL, "h264: OpenH264 could not create an encoder");
        return NULL;
    }
    int quiet = WELS_LOG_QUIET;
    (*v->enc)->SetOption(v->enc, ENCODER_OPTION_TRACE_LEVEL, &quiet);
    SEncParamExt p;
    (*v->enc)->GetDefaultParams(v->enc, &p);
    p.iUsageType = CAMERA_VIDEO_REAL_TIME;
    p.iPicWidth = o->width;
    p.iPicHeight = o->height;
    p.iTargetBitrate = o->bitrate_kbps * 1000;
    p.iMaxBitrate = UNSPECIFIED_BIT_RATE;
    p.iRCMode = RC_BITRATE_MODE;
    p.fMaxFrameRate = (float)o->fps;
    p.iTemporalLayerNum = 1;
    p.iSpatialLayerNum = 1;
    p.iComplexityMode = LOW_COMPLEXITY;
    p.uiIntraPeriod = (unsigned)o->keyframe_interval;
    p.iNumRefFrame = 1;
    p.eSpsPpsIdStrategy = CONSTANT_ID;
    p.bPrefixNalAddingCtrl = false;
    p.iEntropyCodingModeFlag = 0; /* CAVLC: baseline has no CABAC */
    p.bEnableFrameSkip = false;   /* quality may drop, frames never */
    p.iMultipleThreadIdc = 1;     /* one thread: sessions spread over the cores */
    p.bEnableDenoise = false;
    p.bEnableBackgroundDetection = true;
    p.bEnableAdaptiveQuant = false; /* 2 ms of 7.5 a frame on the demo avatar (bench_video) */
    p.bEnableSceneChangeDetect = false; /* IDRs only at the interval and on request */
    p.bEnableLongTermReference = false;
    SSpatialLayerConfig *l = &p.sSpatialLayers[0];
    l->iVideoWidth = o->width;
    l->iVideoHeight = o->height;
    l->fFrameRate = (float)o->fps;
    l->iSpatialBitrate = p.iTargetBitrate;
    l->iMaxSpatialBitrate = UNSPECIFIED_BIT_RATE;
    l->uiProfileIdc = PRO_BASELINE;
    int level = 31;
    l->uiLevelIdc = level_for(o->width, o->height, o->fps, &level);
    l->sSliceArgument.uiSliceMode = SM_SINGLE_SLICE;
    l->bVideoSignalTypePresent = true;
    l->uiVideoFormat = 5; /* unspecified */
    l->bFullRange = false;
    l->bColorDescriptionPresent = true;
    l->uiColorPrimaries = 6; /* SMPTE 170M = BT.601 525 */
    l->uiTransferCharacteristics = 6;
    l->uiColorMatrix = 6;
    if ((*v->enc)->InitializeExt(v->enc, &p) != 0) {
        ls_err_set(err, LS_INTERNAL, "h264: OpenH264 refused %dx%d at %d kbit/s", o->width, o->height, o->bitrate_kbps);
        ls_video_close(v);
        return NULL;
    }
    int fmt = videoFormatI420;
    (*v->enc)->SetOption(v->enc, ENCODER_OPTION_DATAFORMAT, &fmt);
    /* Constrained baseline with constraint_set0, 1 and 2 (0xE0; see
     * mark_constrained), the string browsers use for it; test_video.py reads
     * the SPS back and checks this string against it. */
    snprintf(v->codec, sizeof v->codec, "avc1.42E0%02X", level);
    return v;
}

void ls_video_close(ls_video *v) {
    if (!v) return;
    if (v->enc) {
        (*v->enc)->Uninitialize(v->enc);
        WelsDestroySVCEncoder(v->enc);
    }
    free(v);
}

const char *ls_video_codec(const ls_video *v) { return v->codec; }
void ls_video_request_keyframe(ls_video *v) { v->want_key = 1; }
int64_t ls_video_frames(const ls_video *v) { return v->frames; }

/* OpenH264 marks its baseline SPS with constraint_set0 and set1 (0xC0):
 * constrained baseline already. The stream also meets constraint_set2 (the
 * Extended profile's constraints: no FMO, ASO or redundant slices, which
 * constrained baseline excludes too), and "42E0" is what WebCodecs and WebRTC
 * peers expect, so the flag is set in each SPS of the access unit. The byte
 * after profile_idc is a plain flag byte (0x42 precedes it, so no emulation
 * prevention byte can be involved). */
static void mark_constrained(uint8_t *p, size_t n) {
    for (size_t i = 0; i + 5 < n; i++)
        if (p[i] == 0 && p[i + 1] == 0 && p[i + 2] == 1 && (p[i + 3] & 0x1F) == 7 && p[i + 4] == 66) p[i + 5] |= 0x20;
}

int ls_video_encode(ls_video *v, const uint8_t *i420, ls_buf *out, int *key, ls_err *err) {
    int w = v->o.width, h = v->o.height;
    if (v->want_key) {
        (*v->enc)->ForceIntraFrame(v->enc, true);
        v->want_key = 0;
    }
    SSourcePicture pic;
    memset(&pic, 0, sizeof pic);
    pic.iColorFormat = videoFormatI420;
    pic.iPicWidth = w;
    pic.iPicHeight = h;
    pic.iStride[0] = w;
    pic.iStride[1] = pic.iStride[2] = w / 2;
    /* OpenH264 reads the planes only. */
    pic.pData[0] = (unsigned char *)i420;
    pic.pData[1] = pic.pData[0] + (size_t)w * (size_t)h;
    pic.pData[2] = pic.pData[1] + (size_t)(w / 2) * (size_t)(h / 2);
    pic.uiTimeStamp = v->frames * 1000 / v->o.fps;
    SFrameBSInfo info;
    memset(&info, 0, sizeof info);
    if ((*v->enc)->EncodeFrame(v->enc, &pic, &info) != cmResultSuccess)
        return ls_err_set(err, LS_INTERNAL, "h264: OpenH264 failed on frame %lld", (long long)v->frames);
    if (info.eFrameType == videoFrameTypeSkip || info.eFrameType == videoFrameTypeInvalid)
        return ls_err_set(err, LS_INTERNAL, "h264: OpenH264 skipped frame %lld (frames are never dropped)",
                          (long long)v->frames);
    size_t before = out->len;
    for (int i = 0; i < info.iLayerNum; i++) {
        const SLayerBSInfo *li = &info.sLayerInfo[i];
        size_t n = 0;
        for (int k = 0; k < li->iNalCount; k++) n += (size_t)li->pNalLengthInByte[k];
        if (ls_buf_append(out, li->pBsBuf, n) != 0) {
            out->len = before;
            return ls_err_set(err, LS_RESOURCE_EXHAUSTED, "out of memory for an h264 frame");
        }
    }
    *key = info.eFrameType == videoFrameTypeIDR;
    if (*key) mark_constrained(out->data + before, out->len - before);
    v->frames++;
    return 0;
}
