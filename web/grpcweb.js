// grpcweb.js - a small gRPC-Web client for lipsyncd's demo page.
//
// Two halves, both hand-written for the few messages the page needs:
//  - protobuf: an encoder for the request messages and a schema-driven
//    decoder for the responses (proto3 wire format: varints, 64-bit doubles,
//    length-delimited strings, bytes, sub-messages and packed repeated ints);
//  - gRPC-Web: one call = POST <base>/multitenant.MultiTenantLipSync/
//    <Method> with content-type application/grpc-web+proto; the body is one
//    frame (flag byte 0, 4-byte big-endian length, message); the response is
//    data frames and one trailer frame (flag 0x80) holding grpc-status and a
//    percent-encoded grpc-message. A server-streaming call (RenderSpeech) is
//    the same with many data frames, read as they arrive (`stream`).
// The tensors of CompositeBatchRequest are sent as `bytes` of little-endian
// float32, which is the same wire encoding as the proto's packed floats.

export const SERVICE = 'multitenant.MultiTenantLipSync';

// ---------------------------------------------------------------- encoding

class Writer {
  constructor() { this.parts = []; this.len = 0; }
  push(u8) { this.parts.push(u8); this.len += u8.length; }
  varint(v) {
    // Non-negative integers below 2^53 (ids, sizes, bools) are all we send.
    const out = [];
    while (v > 127) { out.push((v % 128) | 128); v = Math.floor(v / 128); }
    out.push(v);
    this.push(Uint8Array.from(out));
  }
  tag(field, wire) { this.varint(field * 8 + wire); }
  string(field, s) {
    if (!s) return this;
    const b = new TextEncoder().encode(s);
    this.tag(field, 2); this.varint(b.length); this.push(b);
    return this;
  }
  bytes(field, u8) {
    if (!u8 || !u8.length) return this;
    this.tag(field, 2); this.varint(u8.length); this.push(u8);
    return this;
  }
  uint(field, v) { if (v) { this.tag(field, 0); this.varint(v); } return this; }
  // A sub-message, written even when empty (a oneof member such as SessionEnd).
  message(field, u8) { this.tag(field, 2); this.varint(u8.length); if (u8.length) this.push(u8); return this; }
  bool(field, v) { return this.uint(field, v ? 1 : 0); }
  // The message bytes, unframed (for a sub-message field).
  finish() {
    const out = new Uint8Array(this.len);
    let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
  // The frame header is reserved in front so the body is built with one copy.
  finishFramed() {
    const out = new Uint8Array(5 + this.len);
    new DataView(out.buffer).setUint32(1, this.len);
    let o = 5;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
}

// Float32Array -> its little-endian bytes (a view when the platform is
// little-endian, which every browser platform is; a copy otherwise).
function floatBytes(f32) {
  const le = new Uint8Array(new Float32Array([1]).buffer)[3] === 0x3f;
  if (le) return new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  const out = new Uint8Array(f32.length * 4);
  const dv = new DataView(out.buffer);
  f32.forEach((v, i) => dv.setFloat32(i * 4, v, true));
  return out;
}

export const encode = {
  ListModelsRequest: () => new Writer(),
  GetModelStatsRequest: (m) => new Writer().string(1, m.model_id),
  LoadModelRequest: (m) => new Writer().string(1, m.model_id).bool(2, m.force_reload),
  UnloadModelRequest: (m) => new Writer().string(1, m.model_id),
  HealthRequest: () => new Writer(),
  CompositeBatchRequest: (m) => new Writer()
    .string(1, m.model_id)
    .bytes(2, m.visual_frames && floatBytes(m.visual_frames))  // absent: the server builds it
    .bytes(3, floatBytes(m.audio_features))
    .uint(4, m.batch_size)
    .uint(5, m.start_frame_idx),
  // A live session's messages (WebSocket /session: one per binary message).
  SessionStart: (m) => new Writer()
    .string(1, m.model_id).string(2, m.output_format).uint(4, m.start_frame_idx)
    .string(5, m.pcm_encoding).uint(6, m.sample_rate).uint(7, m.channels).uint(8, m.batch_size)
    .uint(9, m.video_bitrate_kbps).uint(10, m.keyframe_interval_frames),
  SessionRequest: (m) => {
    const w = new Writer();
    if (m.start) w.message(1, encode.SessionStart(m.start).finish());
    else if (m.audio) w.message(2, new Writer().bytes(1, m.audio.pcm).bool(2, m.audio.request_keyframe).finish());
    else w.message(3, new Uint8Array(0));
    return w;
  },
  // audio: { wav } (RIFF WAVE bytes).
  RenderSpeechRequest: (m) => new Writer()
    .string(1, m.model_id)
    .bytes(2, new Writer().bytes(1, m.wav).finish())
    .string(3, m.output_format)
    .uint(5, m.start_frame_idx)
    .uint(6, m.batch_size),
};

// ---------------------------------------------------------------- decoding

// Schemas: field number -> [name, type, (sub-schema), repeated?]
const S = {};
S.TensorInfo = { 1: ['name', 'string'], 2: ['shape', 'int64', null, true] };
S.ModelStats = {
  1: ['usage_count', 'int64'], 2: ['last_used_unix_ms', 'int64'], 3: ['loaded_unix_ms', 'int64'],
  4: ['load_time_ms', 'double'], 5: ['total_inference_ms', 'double'], 6: ['avg_inference_ms', 'double'],
  7: ['avg_composite_ms', 'double'], 8: ['memory_bytes', 'int64'], 9: ['load_count', 'int64'],
  10: ['eviction_count', 'int64'], 11: ['in_flight', 'int64'], 12: ['memory_estimate_bytes', 'int64'],
  13: ['p50_inference_ms', 'double'], 14: ['p99_inference_ms', 'double'],
  15: ['total_load_time_ms', 'double'], 16: ['failed_requests', 'int64'],
};
S.ModelInfo = {
  1: ['model_id', 'string'], 2: ['state', 'string'], 3: ['loaded', 'bool'], 4: ['error', 'string'],
  5: ['model_path', 'string'], 6: ['background_dir', 'string'], 7: ['crop_rects_path', 'string'],
  8: ['num_frames', 'int64'], 9: ['inputs', 'message', 'TensorInfo', true],
  10: ['outputs', 'message', 'TensorInfo', true], 11: ['stats', 'message', 'ModelStats'],
  12: ['pinned', 'bool'], 13: ['preload', 'bool'], 14: ['audio_encoder_path', 'string'],
};
S.ListModelsResponse = { 1: ['models', 'message', 'ModelInfo', true] };
S.GetModelStatsResponse = {
  1: ['models', 'message', 'ModelInfo', true], 2: ['loaded_models', 'int64'], 3: ['max_models', 'int64'],
  4: ['total_memory_bytes', 'int64'], 5: ['max_memory_bytes', 'int64'], 6: ['eviction_policy', 'string'],
  7: ['total_requests', 'int64'], 8: ['total_loads', 'int64'], 9: ['total_load_failures', 'int64'],
  10: ['total_evictions', 'int64'], 11: ['total_idle_unloads', 'int64'], 12: ['engine_sessions', 'int64'],
};
S.LoadModelResponse = { 1: ['success', 'bool'], 2: ['error', 'string'], 3: ['load_time_ms', 'double'],
  4: ['already_loaded', 'bool'] };
S.UnloadModelResponse = { 1: ['success', 'bool'], 2: ['error', 'string'], 3: ['state', 'string'] };
S.HealthResponse = { 1: ['healthy', 'bool'], 2: ['status', 'string'], 3: ['loaded_models', 'int64'],
  4: ['configured_models', 'int64'], 5: ['version', 'string'], 6: ['uptime_s', 'double'] };
S.RenderSpeechResponse = {
  1: ['first_frame_index', 'int64'], 2: ['frames', 'bytes', null, true], 3: ['output_format', 'string'],
  4: ['frame_width', 'int64'], 5: ['frame_height', 'int64'], 6: ['inference_time_ms', 'double'],
  7: ['composite_time_ms', 'double'], 8: ['total_frames', 'int64'], 9: ['input_time_ms', 'double'],
  10: ['feature_time_ms', 'double'],
};
S.SessionStarted = {
  1: ['session_id', 'string'], 2: ['model_loaded', 'bool'], 3: ['frame_width', 'int64'],
  4: ['frame_height', 'int64'], 5: ['fps', 'double'], 6: ['lookahead_ms', 'int64'],
  7: ['output_format', 'string'], 8: ['codec', 'string'],
};
S.Frame = { 1: ['index', 'int64'], 2: ['pts_ms', 'int64'], 3: ['avatar_frame', 'int64'], 4: ['data', 'bytes'],
  5: ['keyframe', 'bool'] };
S.SessionEnded = { 1: ['frames', 'int64'], 2: ['audio_seconds', 'double'], 3: ['p50_latency_ms', 'double'],
  4: ['p99_latency_ms', 'double'] };
S.SessionResponse = { 1: ['started', 'message', 'SessionStarted'], 2: ['frame', 'message', 'Frame'],
  3: ['ended', 'message', 'SessionEnded'] };
S.CompositeBatchResponse = {
  1: ['composited_frames', 'bytes', null, true], 2: ['inference_time_ms', 'double'],
  3: ['composite_time_ms', 'double'], 4: ['model_loaded', 'bool'], 5: ['success', 'bool'],
  6: ['error', 'string'], 7: ['total_time_ms', 'double'], 8: ['model_load_time_ms', 'double'],
};

class Reader {
  constructor(u8) { this.b = u8; this.p = 0; this.dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength); }
  // int64 as a Number: two's complement for negatives (shape dims of -1).
  varint() {
    let v = 0n, shift = 0n;
    for (;;) {
      if (this.p >= this.b.length) throw new Error('truncated varint');
      const c = this.b[this.p++];
      v |= BigInt(c & 127) << shift;
      if (c < 128) break;
      shift += 7n;
    }
    return Number(BigInt.asIntN(64, v));
  }
  bytes() {
    const n = this.varint();
    if (n < 0 || this.p + n > this.b.length) throw new Error('truncated field');
    const out = this.b.subarray(this.p, this.p + n);
    this.p += n;
    return out;
  }
}

function defaults(schema) {
  const o = {};
  for (const [name, type, , repeated] of Object.values(schema))
    o[name] = repeated ? [] : type === 'string' ? '' : type === 'bool' ? false : type === 'message' ? null : 0;
  return o;
}

export function decode(type, u8) {
  const schema = S[type];
  const out = defaults(schema);
  const r = new Reader(u8);
  while (r.p < u8.length) {
    const key = r.varint(), field = Math.floor(key / 8), wire = key % 8;
    const f = schema[field];
    let raw;
    if (wire === 0) raw = r.varint();
    else if (wire === 1) { raw = r.dv.getFloat64(r.p, true); r.p += 8; }
    else if (wire === 2) raw = r.bytes();
    else if (wire === 5) { raw = r.dv.getFloat32(r.p, true); r.p += 4; }
    else throw new Error(`unsupported wire type ${wire}`);
    if (!f) continue; // a field this page does not know
    const [name, ftype, sub, repeated] = f;
    let vals;
    if (ftype === 'string') vals = [new TextDecoder().decode(raw)];
    else if (ftype === 'bool') vals = [raw !== 0];
    else if (ftype === 'message') vals = [decode(sub, raw)];
    else if (ftype === 'bytes') vals = [raw];
    else if (ftype === 'int64' && wire === 2) { // packed
      const pr = new Reader(raw); vals = [];
      while (pr.p < raw.length) vals.push(pr.varint());
    } else vals = [raw];
    if (repeated) out[name].push(...vals); else out[name] = vals[vals.length - 1];
  }
  return out;
}

// ---------------------------------------------------------------- calls

export class GrpcError extends Error {
  constructor(code, message, body) {
    super(`gRPC status ${code}: ${message}`);
    this.code = code;
    this.grpcMessage = message;
    this.body = body; // the response message sent with the error, if any
  }
}

function parseTrailers(u8) {
  const t = {};
  for (const line of new TextDecoder().decode(u8).split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) t[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return t;
}

// One unary call. framedBody comes from encode.X(...).finishFramed().
// modelId, for a call that names a model, travels as the x-model-id header:
// a load balancer in front of several servers routes by it (docs/SCALING.md).
// Resolves to the response message bytes; rejects with GrpcError.
// POST one call; resolves to the fetch Response once its status is 200.
async function post(base, method, framedBody, { authorization, signal, modelId } = {}) {
  const headers = { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1',
    'x-user-agent': 'lipsyncd-demo/1' };
  if (authorization) headers.authorization = authorization;
  if (modelId) headers['x-model-id'] = modelId;
  const resp = await fetch(`${base}/${SERVICE}/${method}`, { method: 'POST', headers, body: framedBody, signal });
  if (!resp.ok) throw new GrpcError(-resp.status, `HTTP ${resp.status}: ${(await resp.text()).trim()}`);
  return resp;
}

export async function unary(base, method, framedBody, opts) {
  const resp = await post(base, method, framedBody, opts);
  const b = new Uint8Array(await resp.arrayBuffer());
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let message = null, trailers = null;
  for (let p = 0; p < b.length;) {
    if (b.length - p < 5) throw new GrpcError(13, 'truncated gRPC-Web frame');
    const flags = b[p], n = dv.getUint32(p + 1);
    const payload = b.subarray(p + 5, p + 5 + n);
    if (payload.length !== n) throw new GrpcError(13, 'truncated gRPC-Web frame');
    if (flags & 0x80) trailers = parseTrailers(payload);
    else if (message === null) message = payload;
    p += 5 + n;
  }
  if (!trailers) throw new GrpcError(13, 'response without trailers');
  const code = Number(trailers['grpc-status']);
  if (code !== 0) throw new GrpcError(code, decodeURIComponent(trailers['grpc-message'] || ''), message);
  return message || new Uint8Array(0);
}

// A server-streaming call: onMessage(bytes) for each response message as it
// arrives (it may return a promise: reading waits for it). Resolves once the
// trailers say OK; rejects with GrpcError.
export async function stream(base, method, framedBody, onMessage, opts) {
  const resp = await post(base, method, framedBody, opts);
  const reader = resp.body.getReader();
  let buf = new Uint8Array(0), trailers = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (value) {
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
    }
    // Every complete frame in the buffer.
    while (buf.length >= 5) {
      const n = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(1);
      if (buf.length < 5 + n) break;
      const flags = buf[0], payload = buf.slice(5, 5 + n);
      buf = buf.slice(5 + n);
      if (flags & 0x80) trailers = parseTrailers(payload);
      else await onMessage(payload);
    }
    if (done) break;
  }
  if (!trailers) throw new GrpcError(13, 'stream ended without trailers');
  const code = Number(trailers['grpc-status']);
  if (code !== 0) throw new GrpcError(code, decodeURIComponent(trailers['grpc-message'] || ''));
}

// Typed convenience: call('ListModels', 'ListModelsRequest', {}, 'ListModelsResponse').
// A request's model_id is sent as x-model-id as well.
export async function call(base, method, reqType, req, respType, opts) {
  const body = encode[reqType](req).finishFramed();
  return decode(respType, await unary(base, method, body, { modelId: req.model_id, ...opts }));
}
