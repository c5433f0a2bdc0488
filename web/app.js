// app.js - the demo page: pick a model, play speech (or synthetic audio
// features) through it over gRPC-Web, watch the statistics.
//
// Playback is a small pipeline: a producer fills a queue of decoded frames
// (ImageBitmaps); a 25 fps timer draws one queued frame per tick. Two
// producers:
//  - speech (models with an audio encoder): the page fetches /speech.wav,
//    sends it in one RenderSpeech call and queues each streamed batch as it
//    arrives; the audio starts with the first frame drawn;
//  - features: InferBatchComposite requests of synthetic audio windows (at
//    most two batches ahead of the screen), the visual input built by the
//    server. window.lsDemo exposes the state for the end-to-end test
// (tests/browser), including the exact request bytes of the batch whose
// frame is on the canvas.
import { call, encode, unary, stream, decode, GrpcError } from './grpcweb.js';

const $ = (id) => document.getElementById(id);
// ?server=http://host:port talks to another lipsyncd (it must list this
// page's origin in http.cors_origins); default: the server of this page.
const BASE = new URLSearchParams(location.search).get('server') || '';
const FPS = 25;
const AHEAD_BATCHES = 2;
// The demo model's per-frame sizes; a loaded model's own shapes replace them.
const DEFAULT_AUDIO = [32, 16, 16];

const demo = window.lsDemo = {
  state: 'idle',        // idle | playing | done | error
  framesDrawn: 0,
  lastDrawn: null,      // { frame, indexInBatch, batchStart, batchSize }
  source: null,         // what the last Play used: 'speech' | 'features'
  totalFrames: 0,       // frames the speech has (N + 2), once known
  audioStarted: false,  // speech: the audio element began playing
  drawnBatchRequest: null, // framed gRPC-Web body (Uint8Array) of that frame's batch
  errors: [],
  models: [],
};

let models = [];
let playToken = 0;

function opts() {
  const key = $('apikey').value.trim();
  return key ? { authorization: `Bearer ${key}` } : {};
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : 'muted';
  if (isError) demo.errors.push(text);
}

function errText(e) {
  return e instanceof GrpcError ? e.grpcMessage || e.message : String(e && e.message || e);
}

const fmt = {
  ms: (v) => (v ? v.toFixed(1) : '0') + ' ms',
  mb: (v) => (v / 1048576).toFixed(1) + ' MiB',
  int: (v) => String(v),
};

function row(cells, tag = 'td') {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement(tag);
    td.textContent = c;
    tr.appendChild(td);
  }
  return tr;
}

function fillTable(table, rows, header) {
  table.replaceChildren(...(header ? [row(header, 'th')] : []), ...rows.map((r) => row(r)));
}

// ---------------------------------------------------------------- models

async function refreshModels() {
  try {
    const r = await call(BASE, 'ListModels', 'ListModelsRequest', {}, 'ListModelsResponse', opts());
    models = demo.models = r.models;
    const sel = $('model'), keep = sel.value;
    sel.replaceChildren(...models.map((m) => {
      const o = document.createElement('option');
      o.value = m.model_id;
      o.textContent = `${m.model_id} (${m.state})`;
      return o;
    }));
    if (models.some((m) => m.model_id === keep)) sel.value = keep;
  } catch (e) {
    setStatus(`ListModels failed: ${errText(e)}`, true);
  }
}

async function loadSelected() {
  const id = $('model').value;
  setStatus(`loading ${id}...`);
  try {
    const r = await call(BASE, 'LoadModel', 'LoadModelRequest', { model_id: id }, 'LoadModelResponse', opts());
    setStatus(r.already_loaded ? `${id} was already loaded` : `${id} loaded in ${fmt.ms(r.load_time_ms)}`);
  } catch (e) {
    setStatus(`LoadModel ${id}: ${errText(e)}`, true);
  }
  refreshModels();
}

async function unloadSelected() {
  const id = $('model').value;
  try {
    const r = await call(BASE, 'UnloadModel', 'UnloadModelRequest', { model_id: id }, 'UnloadModelResponse', opts());
    setStatus(`${id}: ${r.state}`);
  } catch (e) {
    setStatus(`UnloadModel ${id}: ${errText(e)}`, true);
  }
  refreshModels();
}

// ---------------------------------------------------------------- stats

const playback = { fps: 0, lastTotal: 0, lastInfer: 0, lastComposite: 0, requests: 0, drawnTimes: [] };

function renderPlayback() {
  fillTable($('playback'), [
    ['state', demo.state],
    ['frames drawn', fmt.int(demo.framesDrawn)],
    ['display rate', `${playback.fps.toFixed(1)} fps`],
    ['requests', fmt.int(playback.requests)],
    ['last request', fmt.ms(playback.lastTotal)],
    ['  inference', fmt.ms(playback.lastInfer)],
    ['  composite', fmt.ms(playback.lastComposite)],
  ]);
}

async function pollStats() {
  try {
    const s = await call(BASE, 'GetModelStats', 'GetModelStatsRequest', { model_id: '' }, 'GetModelStatsResponse',
      opts());
    fillTable($('totals'), [
      ['models', `${s.loaded_models} / ${s.max_models} loaded`],
      ['memory', `${fmt.mb(s.total_memory_bytes)} / ${fmt.mb(s.max_memory_bytes)}`],
      ['policy', s.eviction_policy],
      ['requests', fmt.int(s.total_requests)],
      ['loads', `${s.total_loads} (${s.total_load_failures} failed)`],
      ['evictions', `${s.total_evictions}, idle ${s.total_idle_unloads}`],
    ]);
    const sel = $('model').value;
    fillTable($('models'), s.models.map((m) => {
      const st = m.stats || {};
      return [m.model_id, m.state, fmt.int(st.usage_count || 0), fmt.ms(st.avg_inference_ms),
        fmt.ms(st.p50_inference_ms), fmt.ms(st.p99_inference_ms), fmt.ms(st.avg_composite_ms),
        fmt.mb(st.memory_bytes || 0), fmt.int(st.in_flight || 0), fmt.int(st.load_count || 0),
        fmt.int(st.eviction_count || 0)];
    }), ['model', 'state', 'requests', 'avg infer', 'p50', 'p99', 'avg composite', 'memory', 'in flight',
      'loads', 'evictions']);
    [...$('models').rows].forEach((tr) => tr.classList.toggle('selected', tr.cells[0].textContent === sel));
  } catch (e) {
    fillTable($('totals'), [['error', errText(e)]]);
  }
}

async function pollHealth() {
  try {
    const h = await call(BASE, 'Health', 'HealthRequest', {}, 'HealthResponse', opts());
    $('health').textContent = `${h.status} - v${h.version}, ${h.loaded_models}/${h.configured_models} models loaded`;
  } catch (e) {
    $('health').textContent = `unreachable: ${errText(e)}`;
  }
}

// ---------------------------------------------------------------- inputs

function perFrame(shape, fallback) {
  // shape is [N, ...] with N possibly -1; the rest must be fixed.
  const dims = shape && shape.length > 1 ? shape.slice(1) : fallback;
  return dims.some((d) => d <= 0) ? fallback : dims;
}

// Audio window of stream frame k: a level that rises and falls with a sine
// (period 20 frames = 0.8 s at 25 fps) plus a fixed ripple. The demo model
// opens the mouth with the window's mean, so the mouth moves with it.
function makeAudioWindow(k, n) {
  const level = 1.2 * Math.sin((2 * Math.PI * k) / 20);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = level + 0.3 * Math.sin(i * 0.37) * Math.cos(i * 0.011);
  return a;
}

const prod = (dims) => dims.reduce((x, y) => x * y, 1);

// ---------------------------------------------------------------- playback

// Features producer: InferBatchComposite batches of synthetic windows.
function featuresProducer({ token, id, total, batch, start, info, queue }) {
  const aDims = perFrame(info.inputs && info.inputs[1] && info.inputs[1].shape, DEFAULT_AUDIO);
  const aLen = prod(aDims);
  return async () => {
    for (let s = 0; s < total && token === playToken; s += batch) {
      while (queue.length >= AHEAD_BATCHES * batch && token === playToken) await sleep(10);
      const b = Math.min(batch, total - s);
      const audio = new Float32Array(b * aLen);
      for (let i = 0; i < b; i++) audio.set(makeAudioWindow(start + s + i, aLen), i * aLen);
      // Audio only: the server builds the visual input from the avatar's frames.
      const body = encode.CompositeBatchRequest({ model_id: id, audio_features: audio,
        batch_size: b, start_frame_idx: start + s }).finishFramed();
      const resp = decode('CompositeBatchResponse', await unary(BASE, 'InferBatchComposite', body,
        { ...opts(), modelId: id }));
      playback.requests++;
      playback.lastTotal = resp.total_time_ms;
      playback.lastInfer = resp.inference_time_ms;
      playback.lastComposite = resp.composite_time_ms;
      const record = { batchStart: start + s, batchSize: b, request: body };
      for (let i = 0; i < resp.composited_frames.length; i++) {
        const bitmap = await createImageBitmap(new Blob([resp.composited_frames[i]], { type: 'image/png' }));
        queue.push({ frame: start + s + i, indexInBatch: i, record, bitmap });
      }
    }
  };
}

// Speech producer: one RenderSpeech call with the demo speech; frames are
// queued batch by batch as the stream delivers them.
function speechProducer({ token, id, batch, start, queue, audio }) {
  return async () => {
    const r = await fetch(`${BASE}/speech.wav`);
    if (!r.ok) throw new Error(`GET /speech.wav: HTTP ${r.status} (the config has no http.speech_wav)`);
    const wav = new Uint8Array(await r.arrayBuffer());
    audio.src = URL.createObjectURL(new Blob([wav], { type: 'audio/wav' }));
    const body = encode.RenderSpeechRequest({ model_id: id, wav, batch_size: batch, start_frame_idx: start,
      output_format: 'png' }).finishFramed();
    const record = { batchStart: start, batchSize: batch, request: body };
    const t0 = performance.now();
    await stream(BASE, 'RenderSpeech', body, async (msg) => {
      if (token !== playToken) return;
      const resp = decode('RenderSpeechResponse', msg);
      playback.requests++;
      playback.lastTotal = performance.now() - t0;
      playback.lastInfer = resp.inference_time_ms;
      playback.lastComposite = resp.composite_time_ms;
      demo.totalFrames = resp.total_frames;
      for (let i = 0; i < resp.frames.length; i++) {
        const bitmap = await createImageBitmap(new Blob([resp.frames[i]], { type: 'image/png' }));
        queue.push({ frame: resp.first_frame_index + i, indexInBatch: i, record, bitmap });
      }
    }, { modelId: id, ...opts() });
  };
}

async function play() {
  const token = ++playToken;
  const id = $('model').value;
  const total = Math.max(1, Number($('frames').value) | 0);
  const batch = Math.min(32, Math.max(1, Number($('batch').value) | 0));
  const start = Math.max(0, Number($('start').value) | 0);
  const info = models.find((m) => m.model_id === id) || {};
  const speech = $('source').value === 'speech' && !!info.audio_encoder_path;
  const audio = $('audio');

  Object.assign(demo, { state: 'playing', framesDrawn: 0, lastDrawn: null, drawnBatchRequest: null,
    source: speech ? 'speech' : 'features', totalFrames: speech ? 0 : total, audioStarted: false });
  Object.assign(playback, { requests: 0, drawnTimes: [] });
  $('play').disabled = true;
  $('stop').disabled = false;
  setStatus(speech ? `speaking through ${id} (RenderSpeech, batches of ${batch})`
    : `playing ${total} frames of ${id} in batches of ${batch}`);

  const ctx = $('canvas').getContext('2d');
  const queue = [];
  let producerDone = false, failed = null;
  const run = speech ? speechProducer({ token, id, batch, start, queue, audio })
    : featuresProducer({ token, id, total, batch, start, info, queue });
  const producer = run().catch((e) => { failed = e; }).finally(() => { producerDone = true; });

  await new Promise((resolve) => {
    const timer = setInterval(() => {
      if (token !== playToken || failed || (producerDone && !queue.length)) {
        clearInterval(timer);
        resolve();
        return;
      }
      const f = queue.shift();
      if (!f) return; // the network is behind: hold the last frame
      ctx.drawImage(f.bitmap, 0, 0, ctx.canvas.width, ctx.canvas.height);
      f.bitmap.close();
      if (speech && !demo.audioStarted) {
        demo.audioStarted = true; // frame 0 is on screen: the speech starts with it
        audio.play().catch((e) => demo.errors.push(`audio: ${e.message}`));
      }
      demo.framesDrawn++;
      demo.lastDrawn = { frame: f.frame, indexInBatch: f.indexInBatch, batchStart: f.record.batchStart,
        batchSize: f.record.batchSize };
      demo.drawnBatchRequest = f.record.request;
      const now = performance.now();
      playback.drawnTimes.push(now);
      while (playback.drawnTimes.length && now - playback.drawnTimes[0] > 2000) playback.drawnTimes.shift();
      playback.fps = playback.drawnTimes.length > 1
        ? (playback.drawnTimes.length - 1) * 1000 / (now - playback.drawnTimes[0]) : 0;
      renderPlayback();
    }, 1000 / FPS);
  });
  await producer;
  for (const f of queue.splice(0)) f.bitmap.close();
  if (token !== playToken || failed) audio.pause();
  if (token !== playToken) return; // superseded by Stop or another Play
  $('play').disabled = false;
  $('stop').disabled = true;
  if (failed) {
    demo.state = 'error';
    setStatus(`${speech ? 'RenderSpeech' : 'InferBatchComposite'}: ${errText(failed)}`, true);
  } else {
    demo.state = 'done';
    setStatus(`played ${demo.framesDrawn} frames${speech ? ' of speech' : ''}`);
    if (!speech) $('start').value = String(start + total);
  }
  renderPlayback();
  refreshModels();
}

function stop() {
  playToken++;
  $('audio').pause();
  demo.state = 'idle';
  $('play').disabled = false;
  $('stop').disabled = true;
  setStatus('stopped');
  renderPlayback();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- start

$('refresh').addEventListener('click', refreshModels);
$('load').addEventListener('click', loadSelected);
$('unload').addEventListener('click', unloadSelected);
$('play').addEventListener('click', () => { play(); });
$('stop').addEventListener('click', stop);
$('model').addEventListener('change', pollStats);

renderPlayback();
refreshModels().then(() => { demo.ready = true; });
pollHealth();
pollStats();
setInterval(pollStats, 1000);
setInterval(pollHealth, 5000);
