// talk.js - the Talk page: a live session over a WebSocket (/session), H.264
// frames decoded by WebCodecs and drawn in time with the audio.
//
// Protocol (the server's StreamSession, one protobuf message per binary
// WebSocket message): start (output h264, 16 kHz s16le mono) -> audio chunks
// of 20 ms -> end; the server answers started (codec string, lookahead),
// one Frame per video frame (an Annex B access unit, keyframe flag), ended.
//
// Two audio sources:
//  - the bundled speech (/speech.wav, resampled to 16 kHz by an
//    OfflineAudioContext) is sent as a live client would, 20 ms every 20 ms;
//    its playback through Web Audio starts once enough frames are decoded
//    that, at the rate they arrive, none will be late (a player's buffer;
//    at least the session's lookahead behind the audio sent), and a
//    requestAnimationFrame loop draws frame i when the audio clock reaches
//    its timestamp, 40 i ms. Every draw is logged (audio clock minus pts);
//  - the microphone (getUserMedia into an AudioContext at 16 kHz, an
//    AudioWorklet cutting 20 ms chunks): frames are drawn as they decode.
// window.lsTalk exposes the state and logs for the browser test.
import { call, encode, decode } from './grpcweb.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const RATE = 16000;
const CHUNK = 320;           // 20 ms
const FRAME_MS = 40;
const START_MARGIN = 10;     // frames buffered beyond the computed need

const talk = window.lsTalk = {
  ready: false, state: 'idle', source: null, codec: '', lookaheadMs: 0,
  framesReceived: 0, framesDecoded: 0, framesDrawn: 0, late: 0, dropped: 0, bytes: 0,
  decodeMs: [], latencyMs: [], av: [], ended: null, closeCode: null, closeReason: '',
  audioStarted: false, errors: [],
  snapAt: new Set((params.get('snap') || '').split(',').filter(Boolean).map(Number)),
  snapshots: {},             // frame index -> base64 RGBA of the canvas right after it was drawn
  sent: [],                  // the s16le chunks sent, in order
};

let ws = null, decoder = null, actx = null, t0 = 0, queue = [], firstDecodedAt = 0, expectedFrames = 0;
let speechBuffer = null, mic = null, sentAt = [], decodeStart = new Map(), rafOn = false;

function opts() {
  const key = $('apikey').value.trim();
  return key ? { authorization: `Bearer ${key}` } : {};
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : 'muted';
  if (isError) talk.errors.push(text);
}

const pct = (v, p) => {
  if (!v.length) return 0;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)];
};

function renderStats() {
  const kbps = talk.framesReceived ? talk.bytes * 8 / (talk.framesReceived / 25) / 1000 : 0;
  const absErr = talk.av.map((a) => Math.abs(a.err));
  const rows = [
    ['state', talk.state], ['codec', talk.codec || '-'],
    ['frames in / decoded / drawn', `${talk.framesReceived} / ${talk.framesDecoded} / ${talk.framesDrawn}`],
    ['late / dropped', `${talk.late} / ${talk.dropped}`],
    ['video bitrate', `${kbps.toFixed(0)} kbit/s`],
    ['decode p50 / p95', `${pct(talk.decodeMs, 50).toFixed(1)} / ${pct(talk.decodeMs, 95).toFixed(1)} ms`],
    ['latency p50 / p95', `${pct(talk.latencyMs, 50).toFixed(0)} / ${pct(talk.latencyMs, 95).toFixed(0)} ms`],
    ['A/V |clock - pts| p95', talk.av.length ? `${pct(absErr, 95).toFixed(1)} ms` : '-'],
  ];
  const t = $('stats');
  t.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    for (const c of [k, v]) { const td = document.createElement('td'); td.textContent = c; tr.append(td); }
    return tr;
  }));
}

async function refreshModels() {
  const r = await call('', 'ListModels', 'ListModelsRequest', {}, 'ListModelsResponse', opts());
  const sel = $('model');
  const keep = sel.value;
  sel.replaceChildren(...r.models.filter((m) => m.audio_encoder_path).map((m) => {
    const o = document.createElement('option');
    o.value = o.textContent = m.model_id;
    return o;
  }));
  if (keep) sel.value = keep;
}

// The bundled speech as 16 kHz mono: float samples (for playback) and s16le.
async function loadSpeech() {
  const r = await fetch('speech.wav');
  if (!r.ok) throw new Error(`GET /speech.wav: HTTP ${r.status} (the config has no http.speech_wav)`);
  const decoded = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(await r.arrayBuffer());
  const n = decoded.length, mono = new Float32Array(n);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    const d = decoded.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += d[i] / decoded.numberOfChannels;
  }
  const s16 = new Int16Array(n);
  for (let i = 0; i < n; i++) s16[i] = Math.round(Math.max(-1, Math.min(1, mono[i])) * 32767);
  return { mono, s16 };
}

function sendMsg(m) { ws.send(encode.SessionRequest(m).finish()); }

function sendChunk(s16) {
  talk.sent.push(s16);
  sentAt.push(performance.now());
  sendMsg({ audio: { pcm: new Uint8Array(s16.buffer, s16.byteOffset, s16.byteLength) } });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The speech as a live client sends it: a 20 ms chunk every 20 ms.
async function sendSpeech(s16) {
  const begin = performance.now();
  for (let i = 0, k = 0; i < s16.length && ws.readyState === WebSocket.OPEN; i += CHUNK, k++) {
    const wait = begin + k * 20 - performance.now();
    if (wait > 0) await sleep(wait);
    while (ws.bufferedAmount > 65536) await sleep(5);
    sendChunk(s16.slice(i, i + CHUNK));
  }
  if (ws.readyState === WebSocket.OPEN) sendMsg({ end: true });
}

async function startMic() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const ctx = new AudioContext({ sampleRate: RATE });
  await ctx.audioWorklet.addModule('pcm-worklet.js');
  const src = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, 'pcm-capture');
  const mute = ctx.createGain();
  mute.gain.value = 0; // pulled by the graph, never heard
  src.connect(node).connect(mute).connect(ctx.destination);
  node.port.onmessage = (e) => { if (ws && ws.readyState === WebSocket.OPEN) sendChunk(new Int16Array(e.data)); };
  mic = { stream, ctx };
  const seconds = Number(params.get('seconds') || 0);
  if (seconds > 0) setTimeout(() => endMic(), seconds * 1000);
}

function endMic() {
  if (!mic) return;
  mic.stream.getTracks().forEach((t) => t.stop());
  mic.ctx.close();
  mic = null;
  if (ws && ws.readyState === WebSocket.OPEN) sendMsg({ end: true });
}

function b64(u8) {
  let s = '';
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

// The samples sent, as base64 s16le (the test replays them).
talk.sentBase64 = () => {
  const n = talk.sent.reduce((a, c) => a + c.length, 0), all = new Int16Array(n);
  let o = 0;
  for (const c of talk.sent) { all.set(c, o); o += c.length; }
  return b64(new Uint8Array(all.buffer));
};

function draw(item, clockMs) {
  const ctx2d = $('canvas').getContext('2d');
  ctx2d.drawImage(item.vf, 0, 0, $('canvas').width, $('canvas').height);
  item.vf.close();
  talk.framesDrawn++;
  if (clockMs !== null) {
    const err = clockMs - item.idx * FRAME_MS;
    talk.av.push({ i: item.idx, pts: item.idx * FRAME_MS, clock: clockMs, err, at: performance.now() });
    if (err > FRAME_MS) talk.late++;
  }
  // The canvas as drawn, kept as a bitmap (asynchronous: reading pixels
  // here would hold up the next frames); read back only when asked.
  if (talk.snapAt.has(item.idx)) talk.snapshots[item.idx] = createImageBitmap($('canvas'));
}

talk.snapshotBase64 = async (i) => {
  const bm = await talk.snapshots[i];
  const oc = new OffscreenCanvas(bm.width, bm.height), c = oc.getContext('2d');
  c.drawImage(bm, 0, 0);
  return b64(new Uint8Array(c.getImageData(0, 0, bm.width, bm.height).data.buffer));
};

function audioClockMs() {
  const ts = actx.getOutputTimestamp ? actx.getOutputTimestamp() : null;
  const t = ts && ts.contextTime > 0 ? ts.contextTime : actx.currentTime;
  return (t - t0) * 1000;
}

// One frame per animation frame: the oldest one due. Frames are never
// skipped: after a stall of the page the next ones are drawn one per tick,
// late (and counted so), until the clock is caught up.
function tick() {
  if (!actx) return;
  const clock = audioClockMs();
  if (queue.length && queue[0].idx * FRAME_MS <= clock) draw(queue.shift(), clock);
  maybeDone();
  if (talk.state === 'playing') requestAnimationFrame(tick);
  else rafOn = false;
}

// Start the audio once the frames decoded cover what will arrive late: at
// r frames/s, F frames in all, playing now needs F (1 - r / 25) in hand.
function maybeStartAudio() {
  if (talk.audioStarted || !speechBuffer || !firstDecodedAt) return;
  const secs = (performance.now() - firstDecodedAt) / 1000;
  const rate = secs > 0.2 ? (talk.framesDecoded - 1) / secs : 0;
  const need = Math.min(expectedFrames, expectedFrames * (1 - Math.min(1, rate / 25)) + START_MARGIN);
  if (talk.framesDecoded < need && !talk.ended) return;
  talk.audioStarted = true;
  const ctx = new AudioContext();
  const buf = ctx.createBuffer(1, speechBuffer.length, RATE);
  buf.copyToChannel(speechBuffer, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  // Once the context runs, with a lead so the page has settled when frame 0 is due.
  ctx.resume().then(() => {
    t0 = ctx.currentTime + 0.15;
    src.start(t0);
    actx = ctx;
    if (!rafOn) { rafOn = true; requestAnimationFrame(tick); }
  }, (err) => fail(`AudioContext: ${err.message}`));
}

function maybeDone() {
  if (talk.state !== 'playing' || !talk.ended || !talk.flushed) return;
  if (talk.source === 'speech' && queue.length) return;
  talk.state = 'done';
  setStatus(`done: ${talk.framesDrawn} frames drawn, ${talk.late} late, ${talk.dropped} dropped`);
  $('start').disabled = false;
  $('stop').disabled = true;
  renderStats();
}

function onDecoded(vf) {
  const idx = Math.round(vf.timestamp / (FRAME_MS * 1000));
  const t = decodeStart.get(idx);
  if (t !== undefined) { talk.decodeMs.push(performance.now() - t); decodeStart.delete(idx); }
  talk.framesDecoded++;
  if (!firstDecodedAt) firstDecodedAt = performance.now();
  if (talk.source === 'mic') { draw({ idx, vf }, null); return; }
  queue.push({ idx, vf });
  maybeStartAudio();
}

function onMessage(e) {
  const r = decode('SessionResponse', new Uint8Array(e.data));
  if (r.started) {
    talk.codec = r.started.codec;
    talk.lookaheadMs = r.started.lookahead_ms;
    decoder = new VideoDecoder({ output: onDecoded, error: (err) => fail(`VideoDecoder: ${err.message}`) });
    decoder.configure({ codec: r.started.codec, optimizeForLatency: true });
    setStatus(`session ${r.started.session_id}: ${r.started.codec}, lookahead ${r.started.lookahead_ms} ms`);
    if (talk.source === 'mic') startMic().catch((err) => fail(`microphone: ${err.message}`));
    else sendSpeech(talk.speechS16);
  } else if (r.frame) {
    const f = r.frame;
    talk.framesReceived++;
    talk.bytes += f.data.length;
    // Frame i waits for samples up to (floor(3.2 (i + 6)) + 15) * 200 + 400.
    const need = (Math.floor(3.2 * (f.index + 6)) + 15) * 200 + 400;
    const k = Math.min(sentAt.length - 1, Math.ceil(need / CHUNK) - 1);
    if (k >= 0) talk.latencyMs.push(performance.now() - sentAt[k]);
    decodeStart.set(f.index, performance.now());
    decoder.decode(new EncodedVideoChunk({ type: f.keyframe ? 'key' : 'delta', timestamp: f.pts_ms * 1000,
      data: f.data }));
  } else if (r.ended) {
    talk.ended = r.ended;
    decoder.flush().then(() => {
      talk.flushed = true;
      maybeStartAudio();
      maybeDone();
    }, (err) => fail(`VideoDecoder flush: ${err.message}`));
  }
  if (talk.framesReceived % 10 === 0) renderStats();
}

function fail(text) {
  talk.state = 'error';
  setStatus(text, true);
  $('start').disabled = false;
  $('stop').disabled = true;
  renderStats();
}

async function start() {
  Object.assign(talk, { state: 'playing', source: $('source').value, codec: '', framesReceived: 0,
    framesDecoded: 0, framesDrawn: 0, late: 0, dropped: 0, bytes: 0, decodeMs: [], latencyMs: [], av: [],
    ended: null, flushed: false, closeCode: null, closeReason: '', audioStarted: false, snapshots: {}, sent: [] });
  queue = []; sentAt = []; decodeStart = new Map(); firstDecodedAt = 0; actx = null; speechBuffer = null;
  $('start').disabled = true;
  $('stop').disabled = false;
  if (!('VideoDecoder' in window)) return fail('this browser has no WebCodecs VideoDecoder');
  try {
    if (talk.source === 'speech') {
      const { mono, s16 } = await loadSpeech();
      speechBuffer = mono;
      talk.speechS16 = s16;
      expectedFrames = Math.floor(s16.length / RATE * 25) + 2;
    }
  } catch (err) {
    return fail(String(err.message || err));
  }
  const url = new URL('session', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  const key = $('apikey').value.trim();
  if (key) url.searchParams.set('token', key);
  ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => sendMsg({ start: { model_id: $('model').value, output_format: 'h264', pcm_encoding: 's16le',
    sample_rate: RATE, channels: 1, video_bitrate_kbps: Number($('kbps').value) || 0 } });
  ws.onmessage = onMessage;
  ws.onclose = (e) => {
    talk.closeCode = e.code;
    talk.closeReason = e.reason;
    if (e.code !== 1000 && talk.state === 'playing') fail(`session closed: ${e.code} ${e.reason}`);
  };
  ws.onerror = () => { if (talk.state === 'playing') setStatus('WebSocket error', true); };
}

function stop() {
  endMic();
  if (ws && ws.readyState === WebSocket.OPEN) sendMsg({ end: true });
}

$('start').addEventListener('click', () => { start(); });
$('stop').addEventListener('click', stop);
refreshModels().then(() => { talk.ready = true; renderStats(); }, (e) => setStatus(`ListModels: ${e.message}`, true));
