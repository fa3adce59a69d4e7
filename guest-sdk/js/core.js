// weir guest SDK for JavaScript, the world-independent part: per-event views
// over the columnar batch, the emitter, and JSON that reads and writes the
// way the Rust SDK (serde_json) does, so JS and Rust plugins produce the
// same bytes. Plugins import the entry point of their world instead:
// enricher.js, projection.js or command-handler.js.

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const lossyDecoder = new TextDecoder('utf-8');

/** UTF-8 bytes of a string; byte arrays (Uint8Array, ArrayBuffer, other
 * typed arrays' bytes, arrays of numbers) as a Uint8Array. */
export function toBytes(x) {
  if (x instanceof Uint8Array) return x;
  if (typeof x === 'string') return encoder.encode(x);
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (Array.isArray(x)) return Uint8Array.from(x);
  throw new TypeError(`expected a string or Uint8Array, got ${typeof x}`);
}

/** Bytes as a string; invalid UTF-8 throws unless `lossy`. */
export function toText(bytes, lossy = false) {
  return (lossy ? lossyDecoder : decoder).decode(bytes);
}

// ---------------------------------------------------------------------------
// JSON with serde_json's conventions
// ---------------------------------------------------------------------------

/** A JSON number written with a fraction or exponent: serde_json keeps it a
 * float (`1.0` stays `1.0`), so it is kept apart from integers. */
export class JsonFloat {
  constructor(value) {
    this.value = value;
  }
  valueOf() {
    return this.value;
  }
}

const SORTED = Symbol('weir.sortedKeys');

function reviveNumbers(sortKeys) {
  return (key, value, context) => {
    if (typeof value === 'number') {
      const source = context && context.source;
      if (source === undefined) return value;
      if (!Number.isFinite(value)) throw new SyntaxError(`number out of range: ${source}`);
      if (/[.eE]/.test(source)) return new JsonFloat(value);
      if (Number.isSafeInteger(value)) return value;
      const big = BigInt(source);
      // serde_json keeps i64 / u64 exact and reads larger integers as floats.
      return big >= -(2n ** 63n) && big < 2n ** 64n ? big : new JsonFloat(value);
    }
    if (sortKeys && value !== null && typeof value === 'object' && !Array.isArray(value)) {
      Object.defineProperty(value, SORTED, { value: true });
    }
    return value;
  };
}

const plainReviver = reviveNumbers(false);
const sortingReviver = reviveNumbers(true);

/**
 * Parse JSON (a string or UTF-8 bytes). Integers come back as numbers (or
 * BigInt beyond 2^53), numbers with a fraction or exponent as `JsonFloat`
 * (use `+x` or `Number(x)` for arithmetic). With `sortKeys`, objects are
 * written back by `dumps` with their keys in order, like a Rust
 * `serde_json::Value`. Throws a SyntaxError on invalid JSON.
 */
export function loads(data, sortKeys = false) {
  const text = typeof data === 'string' ? data : toText(data);
  let value;
  // The reviver costs a call per value; without a fraction, an exponent or
  // 16+ digits anywhere, plain JSON.parse reads every number exactly.
  if (MAY_NEED_SOURCE.test(text)) {
    value = JSON.parse(text, sortKeys ? sortingReviver : plainReviver);
  } else {
    value = JSON.parse(text);
    if (sortKeys) markSorted(value);
  }
  if (SURROGATE_ESCAPE.test(text)) checkScalarValues(value);
  return value;
}

const MAY_NEED_SOURCE = /\d[.eE]|\d{16}/;
// A \uD800-\uDFFF escape: JSON may pair two into one character; a lone one
// is not a Unicode scalar value, and serde_json refuses it.
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function checkScalarValues(value) {
  if (typeof value === 'string') {
    if (LONE_SURROGATE.test(value)) throw new SyntaxError('lone surrogate in string');
  } else if (Array.isArray(value)) {
    for (const item of value) checkScalarValues(item);
  } else if (value !== null && typeof value === 'object' && !(value instanceof JsonFloat)) {
    for (const key of Object.keys(value)) {
      checkScalarValues(key);
      checkScalarValues(value[key]);
    }
  }
}

function markSorted(value) {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const item of value) markSorted(item);
    return;
  }
  Object.defineProperty(value, SORTED, { value: true });
  for (const key of Object.keys(value)) markSorted(value[key]);
}

export function compareUtf8(a, b) {
  // Code point order (= UTF-8 byte order, which Rust's BTreeMap uses).
  const x = Array.from(a), y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** A finite float the way serde_json writes it: shortest round-trip digits,
 * plain notation for decimal exponents -5..=15, else `1.5e+20` / `1e-7`. */
export function formatFloat(value) {
  if (!Number.isFinite(value)) return 'null';
  if (value === 0) return Object.is(value, -0) ? '-0.0' : '0.0';
  const sign = value < 0 ? '-' : '';
  const [mantissa, exp] = Math.abs(value).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const e = Number(exp);
  const n = digits.length;
  const point = e + 1;
  if (e >= -5 && e <= 15) {
    if (n <= point) return sign + digits + '0'.repeat(point - n) + '.0';
    if (point > 0) return sign + digits.slice(0, point) + '.' + digits.slice(point);
    return sign + '0.' + '0'.repeat(-point) + digits;
  }
  const body = n === 1 ? digits : digits[0] + '.' + digits.slice(1);
  return `${sign}${body}e${e >= 0 ? '+' : '-'}${Math.abs(e)}`;
}

function write(value, out) {
  switch (typeof value) {
    case 'string':
      out.push(JSON.stringify(value));
      return;
    case 'number':
      // -0 is a float in serde_json ("-0" reads as -0.0).
      if (Number.isInteger(value) && !Object.is(value, -0)) out.push(String(value));
      else out.push(formatFloat(value));
      return;
    case 'bigint':
      out.push(value.toString());
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'undefined':
      out.push('null');
      return;
    case 'object':
      break;
    default:
      throw new TypeError(`cannot serialise ${typeof value} as JSON`);
  }
  if (value === null) {
    out.push('null');
  } else if (value instanceof JsonFloat) {
    out.push(formatFloat(value.value));
  } else if (Array.isArray(value)) {
    out.push('[');
    for (let i = 0; i < value.length; i++) {
      if (i) out.push(',');
      write(value[i], out);
    }
    out.push(']');
  } else {
    const keys = Object.keys(value);
    if (value[SORTED]) keys.sort(compareUtf8);
    out.push('{');
    let first = true;
    for (const k of keys) {
      if (value[k] === undefined) continue;
      if (!first) out.push(',');
      first = false;
      out.push(JSON.stringify(k), ':');
      write(value[k], out);
    }
    out.push('}');
  }
}

/** Compact JSON text; keys in the object's own order (sorted for objects
 * from `loads(..., true)`), numbers written as serde_json writes them.
 * Integer-valued numbers are written as integers: wrap a float that must
 * stay one in `JsonFloat`. */
export function dumps(value) {
  if (HAS_RAW_JSON) {
    try {
      return JSON.stringify(value, rawReplacer);
    } catch (e) {
      if (e !== NEEDS_SLOW_PATH) throw e;
    }
  }
  const out = [];
  write(value, out);
  return out.join('');
}

// JSON.rawJSON (where the engine has it) lets the native JSON.stringify do
// the work, with only numbers and sorted objects handed back to JS.
const HAS_RAW_JSON = typeof JSON.rawJSON === 'function';
const NEEDS_SLOW_PATH = Symbol('weir.needsSlowPath');
const INDEX_LIKE = /^(0|[1-9][0-9]*)$/;

function rawReplacer(key, value) {
  switch (typeof value) {
    case 'number':
      return Number.isInteger(value) && !Object.is(value, -0) ? value : JSON.rawJSON(formatFloat(value));
    case 'bigint':
      return JSON.rawJSON(value.toString());
    case 'object':
      if (value === null || Array.isArray(value)) return value;
      if (value instanceof JsonFloat) return JSON.rawJSON(formatFloat(value.value));
      if (value[SORTED]) {
        // A fresh object with the keys inserted in order -- unless a key
        // looks like an array index: JS objects put those first.
        const keys = Object.keys(value).sort(compareUtf8);
        const sorted = {};
        for (const k of keys) {
          if (INDEX_LIKE.test(k)) throw NEEDS_SLOW_PATH;
          sorted[k] = value[k];
        }
        return sorted;
      }
      return value;
    default:
      return value;
  }
}

/** The plugin's JSON config as an object; empty or `null` gives `{}`. */
export function parseConfig(config) {
  const text = config.trim();
  if (text === '' || text === 'null') return {};
  let parsed;
  try {
    parsed = loads(text);
  } catch (e) {
    throw new Error(`invalid config: ${e.message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error('invalid config: expected a JSON object');
  }
  return parsed;
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

function spanStart(ends, i) {
  return i > 0 ? ends[i - 1] : 0;
}

/** One event of a batch: key, value and headers are zero-copy subarrays. */
export class Event {
  constructor(batch, index) {
    this.batch = batch;
    this.index = index;
  }
  get offset() {
    return this.batch.offsets[this.index];
  }
  /** Milliseconds since the Unix epoch (a BigInt). */
  get timestamp() {
    return this.batch.timestamps[this.index];
  }
  get topic() {
    return this.batch.topic;
  }
  get partition() {
    return this.batch.partition;
  }
  /** The key (Uint8Array); empty when the event has no key. */
  get key() {
    const b = this.batch;
    const end = b.keyEnds[this.index];
    return b.keys.subarray(Math.min(spanStart(b.keyEnds, this.index), end), end);
  }
  get value() {
    const b = this.batch;
    const end = b.valueEnds[this.index];
    return b.values.subarray(Math.min(spanStart(b.valueEnds, this.index), end), end);
  }
  /** The value as UTF-8 text (throws if it is not UTF-8). */
  text() {
    return toText(this.value);
  }
  /** The value parsed with `loads`; throws on invalid JSON. */
  json() {
    return loads(this.value);
  }
  /** `[[name, valueBytes], ...]`; names that are not UTF-8 are skipped. */
  get headers() {
    const h = this.batch.headers;
    const result = [];
    for (let j = spanStart(h.ends, this.index); j < h.ends[this.index]; j++) {
      try {
        const name = toText(h.names.subarray(spanStart(h.nameEnds, j), h.nameEnds[j]));
        result.push([name, h.values.subarray(spanStart(h.valueEnds, j), h.valueEnds[j])]);
      } catch {
        // not UTF-8: skipped
      }
    }
    return result;
  }
  header(name) {
    const found = this.headers.find(([n]) => n === name);
    return found ? found[1] : undefined;
  }
}

/** Grows a byte buffer without a copy per append. */
class ByteSink {
  constructor(capacity = 256) {
    this.bytes = new Uint8Array(capacity);
    this.length = 0;
  }
  push(data) {
    const need = this.length + data.length;
    if (need > this.bytes.length) {
      const grown = new Uint8Array(Math.max(need, this.bytes.length * 2));
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
    }
    this.bytes.set(data, this.length);
    this.length = need;
  }
  pushText(text) {
    if (this.bytes.length - this.length < text.length * 3) {
      this.push(new Uint8Array(0));
      this.reserve(text.length * 3);
    }
    this.length += encoder.encodeInto(text, this.bytes.subarray(this.length)).written;
  }
  reserve(extra) {
    if (this.length + extra > this.bytes.length) {
      const grown = new Uint8Array(Math.max(this.length + extra, this.bytes.length * 2));
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
    }
  }
  take() {
    return this.bytes.slice(0, this.length);
  }
}

/** Collects what an enricher emits for a batch, in the columnar form. */
export class Emitter {
  constructor() {
    this.source = 0;
    this.outputs = [];
    this.sources = [];
    this.keys = new ByteSink();
    this.keyEnds = [];
    this.values = new ByteSink(4096);
    this.valueEnds = [];
    this.hEnds = [];
    this.hNames = new ByteSink();
    this.hNameEnds = [];
    this.hValues = new ByteSink();
    this.hValueEnds = [];
  }
  /** Emit `value` (string or bytes) with `key` (empty = no key) to output
   * number `output` (an index into the manifest's outputs). */
  emit(output, key, value, headers = []) {
    if (typeof value === 'string') this.values.pushText(value);
    else this.values.push(value);
    this.finish(output, key, headers);
  }
  /** Emit `value` serialised with `dumps`. */
  emitJson(output, key, value, headers = []) {
    this.values.pushText(dumps(value));
    this.finish(output, key, headers);
  }
  /** Emit `event` unchanged (key, value, headers). */
  forward(output, event) {
    this.emit(output, event.key, event.value, event.headers);
  }
  get length() {
    return this.outputs.length;
  }
  finish(output, key, headers) {
    this.valueEnds.push(this.values.length);
    if (typeof key === 'string') this.keys.pushText(key);
    else this.keys.push(key);
    this.keyEnds.push(this.keys.length);
    this.outputs.push(output);
    this.sources.push(this.source);
    for (const [name, value] of headers) {
      this.hNames.push(toBytes(name));
      this.hNameEnds.push(this.hNames.length);
      this.hValues.push(toBytes(value));
      this.hValueEnds.push(this.hValues.length);
    }
    this.hEnds.push(this.hNameEnds.length);
  }
  /** The WIT `emitted` record. */
  intoEmitted() {
    return {
      outputs: new Uint32Array(this.outputs),
      sources: new Uint32Array(this.sources),
      keyEnds: new Uint32Array(this.keyEnds),
      keys: this.keys.take(),
      valueEnds: new Uint32Array(this.valueEnds),
      values: this.values.take(),
      headers: {
        ends: new Uint32Array(this.hEnds),
        nameEnds: new Uint32Array(this.hNameEnds),
        names: this.hNames.take(),
        valueEnds: new Uint32Array(this.hValueEnds),
        values: this.hValues.take(),
      },
    };
  }
}

/** A plugin failure for the host: message plus the failing event's index. */
export function failure(error, eventIndex) {
  const message = error instanceof Error ? error.message : String(error);
  return { message: message || 'error', eventIndex };
}

/** The text of any thrown value. */
export function messageOf(error) {
  return (error instanceof Error ? error.message : String(error)) || 'error';
}

/** Holds what the plugin's `init` returned. */
export class Slot {
  constructor() {
    this.ready = false;
    this.value = undefined;
  }
  set(value) {
    this.value = value;
    this.ready = true;
  }
  get() {
    if (!this.ready) throw new Error('plugin not initialised: init was not called');
    return this.value;
  }
  /** `get` for a batch export: before init, a failure naming no event. */
  forBatch() {
    try {
      return this.get();
    } catch (e) {
      throw failure(e, undefined);
    }
  }
}

/** The `init` and `describe` exports every world shares, and the slot
 * holding what the plugin's `init(config)` returned. */
export function commonExports(plugin, kind) {
  const slot = new Slot();
  const exports = {
    init(config) {
      try {
        slot.set(plugin.init ? plugin.init(parseConfig(config)) : undefined);
      } catch (e) {
        throw messageOf(e);
      }
    },
    describe() {
      return { name: plugin.name, version: plugin.version, kind };
    },
  };
  return { slot, exports };
}

/** A JSON integer that fits in a signed 64-bit integer, as a BigInt; else undefined. */
export function asI64(x) {
  return asInteger(x, -(2n ** 63n), 2n ** 63n - 1n);
}

/** A JSON integer within [min, max] (BigInts), as a BigInt; else undefined. */
export function asInteger(x, min, max) {
  const big = typeof x === 'number' && Number.isInteger(x) ? BigInt(x) : typeof x === 'bigint' ? x : undefined;
  return big !== undefined && big >= min && big <= max ? big : undefined;
}
