/* mp4.h - an MP4 file of a speech: the server's H.264 access units and the
 * speech itself as AAC, muxed with libavformat (client side only: the server
 * never links FFmpeg).
 *
 * Why in the client: the server streams one access unit per frame (Annex B,
 * SPS/PPS before each key frame); a file is the client's business, and the
 * audio the client sent is already here. The samples muxed are the 16 kHz
 * mono signal the server's mel front end heard (ls_audio_decode_wav), so what
 * is heard is exactly what moved the mouth.
 *
 * Timing: video samples are 40 ms each (25 fps, pts = dts = frame index, no
 * B-frames); audio is AAC-LC from libavcodec's native encoder, whose 1024
 * priming samples are trimmed with an edit list (movenc writes one for the
 * negative first timestamp), so the audio track lasts exactly as long as the
 * WAV. The moov box goes in front (faststart) so browsers play the file while
 * it downloads. */
#ifndef LIPSYNC_MP4_H
#define LIPSYNC_MP4_H

#include <stddef.h>
#include <stdint.h>

/* One access unit as the server sent it. */
typedef struct {
    const uint8_t *data;
    size_t len;
    int key;
} mp4_access_unit;

/* Write path: n_au access units of a w x h picture at 25 fps (the first must
 * be a key frame carrying SPS and PPS) and n_samples mono float samples in
 * [-1, 1] at sample_rate Hz, encoded as AAC. Returns 0, or -1 with a message
 * in err (the partial file is removed). */
int mp4_write(const char *path, int w, int h, const mp4_access_unit *au, size_t n_au, const float *samples,
              size_t n_samples, int sample_rate, char *err, size_t err_len);

#endif
