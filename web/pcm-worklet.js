// pcm-worklet.js - the microphone's samples for a live session. Runs on the
// audio rendering thread of an AudioContext made at 16 kHz (the browser
// resamples the microphone to it), so each render quantum is 128 mono
// samples at the session's rate; they are gathered into 20 ms chunks (320
// samples) of s16le and posted to the page, which sends each as an
// AudioChunk.
class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunk = new Int16Array(320);
    this.n = 0;
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      const v = Math.max(-1, Math.min(1, ch[i]));
      this.chunk[this.n++] = Math.round(v * 32767);
      if (this.n === this.chunk.length) {
        this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
        this.chunk = new Int16Array(320);
        this.n = 0;
      }
    }
    return true;
  }
}

registerProcessor('pcm-capture', PcmCapture);
