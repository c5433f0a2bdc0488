/* mp4.c - see mp4.h. Phases: header (streams, the AAC encoder, SPS/PPS as
 * the video's extradata) -> packets (video as sent, audio as encoded; the
 * muxer interleaves them by time) -> trailer. */
#include "mp4.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/log.h>

#define FPS 25
#define AAC_BITRATE 64000

static int fail(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *av_msg(int code, char *buf, size_t n) {
    av_strerror(code, buf, n);
    return buf;
}

/* The parameter sets (NAL types 7 and 8, with their start codes) in front of
 * the first access unit's picture: the track's extradata, Annex B form
 * (movenc turns it into the avcC box). Returns its length, 0 if none. */
static size_t parameter_sets(const uint8_t *p, size_t n) {
    size_t i = 0;
    for (;;) {
        while (i + 3 <= n && !(p[i] == 0 && p[i + 1] == 0 && p[i + 2] == 1)) i++;
        if (i + 3 >= n) return 0;
        size_t start = i > 0 && p[i - 1] == 0 ? i - 1 : i; /* 4-byte start code */
        int type = p[i + 3] & 0x1f;
        if (type != 7 && type != 8) return start;
        i += 3;
    }
}

/* Encode one frame (NULL: flush) and hand every packet to the muxer. */
static int encode_audio(AVFormatContext *oc, AVStream *st, AVCodecContext *enc, AVFrame *frame, AVPacket *pkt,
                        char *err, size_t n) {
    char m[128];
    int rc = avcodec_send_frame(enc, frame);
    if (rc < 0) return fail(err, n, "aac encoder: %s", av_msg(rc, m, sizeof m));
    for (;;) {
        rc = avcodec_receive_packet(enc, pkt);
        if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return 0;
        if (rc < 0) return fail(err, n, "aac encoder: %s", av_msg(rc, m, sizeof m));
        av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
        pkt->stream_index = st->index;
        rc = av_interleaved_write_frame(oc, pkt);
        if (rc < 0) return fail(err, n, "mp4 audio packet: %s", av_msg(rc, m, sizeof m));
    }
}

int mp4_write(const char *path, int w, int h, const mp4_access_unit *au, size_t n_au, const float *samples,
              size_t n_samples, int sample_rate, char *err, size_t n) {
    char m[128];
    av_log_set_level(AV_LOG_ERROR); /* the muxer's progress notes are not the CLI's output */
    if (n_au == 0 || !au[0].key) return fail(err, n, "the first frame is not a key frame");
    size_t ps = parameter_sets(au[0].data, au[0].len);
    if (ps == 0) return fail(err, n, "the first access unit carries no SPS/PPS");

    AVFormatContext *oc = NULL;
    AVCodecContext *enc = NULL;
    AVFrame *frame = NULL;
    AVPacket *pkt = NULL;
    int rc = avformat_alloc_output_context2(&oc, NULL, "mp4", path), opened = 0;
    if (rc < 0 || !oc) return fail(err, n, "mp4 muxer: %s", av_msg(rc, m, sizeof m));

    /* header: video stream with its parameter sets */
    AVStream *vs = avformat_new_stream(oc, NULL), *as = avformat_new_stream(oc, NULL);
    if (!vs || !as) {
        rc = fail(err, n, "mp4: out of memory");
        goto out;
    }
    vs->time_base = (AVRational){1, FPS};
    vs->avg_frame_rate = vs->r_frame_rate = (AVRational){FPS, 1};
    AVCodecParameters *vp = vs->codecpar;
    vp->codec_type = AVMEDIA_TYPE_VIDEO;
    vp->codec_id = AV_CODEC_ID_H264;
    vp->width = w;
    vp->height = h;
    vp->format = AV_PIX_FMT_YUV420P;
    /* What the SPS's VUI signals (video.c): BT.601, limited range. */
    vp->color_range = AVCOL_RANGE_MPEG;
    vp->color_primaries = AVCOL_PRI_SMPTE170M;
    vp->color_trc = AVCOL_TRC_SMPTE170M;
    vp->color_space = AVCOL_SPC_SMPTE170M;
    vp->extradata = av_mallocz(ps + AV_INPUT_BUFFER_PADDING_SIZE);
    if (!vp->extradata) {
        rc = fail(err, n, "mp4: out of memory");
        goto out;
    }
    memcpy(vp->extradata, au[0].data, ps);
    vp->extradata_size = (int)ps;

    /* header: the AAC encoder and its stream */
    const AVCodec *aac = avcodec_find_encoder(AV_CODEC_ID_AAC);
    if (!aac || !(enc = avcodec_alloc_context3(aac))) {
        rc = fail(err, n, "libavcodec has no AAC encoder");
        goto out;
    }
    enc->sample_fmt = AV_SAMPLE_FMT_FLTP;
    enc->sample_rate = sample_rate;
    av_channel_layout_default(&enc->ch_layout, 1);
    enc->bit_rate = AAC_BITRATE;
    enc->time_base = (AVRational){1, sample_rate};
    if (oc->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if ((rc = avcodec_open2(enc, aac, NULL)) < 0) {
        rc = fail(err, n, "aac encoder at %d Hz: %s", sample_rate, av_msg(rc, m, sizeof m));
        goto out;
    }
    if ((rc = avcodec_parameters_from_context(as->codecpar, enc)) < 0) {
        rc = fail(err, n, "aac parameters: %s", av_msg(rc, m, sizeof m));
        goto out;
    }
    as->time_base = enc->time_base;

    if ((rc = avio_open(&oc->pb, path, AVIO_FLAG_WRITE)) < 0) {
        rc = fail(err, n, "%s: %s", path, av_msg(rc, m, sizeof m));
        goto out;
    }
    opened = 1;
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "movflags", "+faststart", 0);
    rc = avformat_write_header(oc, &opts);
    av_dict_free(&opts);
    if (rc < 0) {
        rc = fail(err, n, "mp4 header: %s", av_msg(rc, m, sizeof m));
        goto out;
    }

    /* packets: video first in the call order, the muxer interleaves */
    if (!(pkt = av_packet_alloc()) || !(frame = av_frame_alloc())) {
        rc = fail(err, n, "mp4: out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_au; i++) {
        if (av_new_packet(pkt, (int)au[i].len) < 0) {
            rc = fail(err, n, "mp4: out of memory");
            goto out;
        }
        memcpy(pkt->data, au[i].data, au[i].len);
        pkt->pts = pkt->dts = (int64_t)i;
        pkt->duration = 1;
        if (au[i].key) pkt->flags |= AV_PKT_FLAG_KEY;
        av_packet_rescale_ts(pkt, (AVRational){1, FPS}, vs->time_base);
        pkt->stream_index = vs->index;
        if ((rc = av_interleaved_write_frame(oc, pkt)) < 0) {
            rc = fail(err, n, "mp4 video packet %zu: %s", i, av_msg(rc, m, sizeof m));
            goto out;
        }
    }
    int fs = enc->frame_size > 0 ? enc->frame_size : 1024;
    for (size_t at = 0; at < n_samples; at += (size_t)fs) {
        size_t k = n_samples - at < (size_t)fs ? n_samples - at : (size_t)fs;
        frame->nb_samples = (int)k;
        frame->format = enc->sample_fmt;
        frame->sample_rate = enc->sample_rate;
        if ((rc = av_channel_layout_copy(&frame->ch_layout, &enc->ch_layout)) < 0 ||
            (rc = av_frame_get_buffer(frame, 0)) < 0) {
            rc = fail(err, n, "mp4: out of memory");
            goto out;
        }
        memcpy(frame->data[0], samples + at, k * sizeof(float));
        frame->pts = (int64_t)at;
        rc = encode_audio(oc, as, enc, frame, pkt, err, n);
        av_frame_unref(frame);
        if (rc) goto out;
    }
    if ((rc = encode_audio(oc, as, enc, NULL, pkt, err, n)) != 0) goto out;

    /* trailer */
    if ((rc = av_write_trailer(oc)) < 0) rc = fail(err, n, "mp4 trailer: %s", av_msg(rc, m, sizeof m));

out:
    av_packet_free(&pkt);
    av_frame_free(&frame);
    avcodec_free_context(&enc);
    if (opened) avio_closep(&oc->pb);
    avformat_free_context(oc);
    if (rc) unlink(path);
    return rc ? -1 : 0;
}
