// Binary buffers, downsampling and number formatting. Pure: no DOM.

const DTYPES = {
  float64: [Float64Array, 8, "getFloat64"],
  float32: [Float32Array, 4, "getFloat32"],
  float16: [null, 2, null],
  int32: [Int32Array, 4, "getInt32"],
  uint32: [Uint32Array, 4, "getUint32"],
  int16: [Int16Array, 2, "getInt16"],
  uint16: [Uint16Array, 2, "getUint16"],
  int8: [Int8Array, 1, "getInt8"],
  uint8: [Uint8Array, 1, "getUint8"],
  bool: [Uint8Array, 1, "getUint8"],
};

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function isMissing(x) {
  return x === null || x === undefined || (typeof x === "number" && Number.isNaN(x));
}

/** Number or null: NaN, null, undefined and non-numbers become null. */
export function toNumber(x) {
  if (typeof x === "number") return Number.isNaN(x) ? null : x;
  if (typeof x === "string" && x.trim() !== "") {
    const v = Number(x);
    return Number.isNaN(v) ? null : v;
  }
  return null;
}

function base64ToBytes(s) {
  const bin = typeof atob === "function" ? atob(s) : Buffer.from(s, "base64").toString("binary");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** A Uint8Array view of `data` (DataView, ArrayBuffer, any typed array, base64 string). */
export function toBytes(data) {
  if (data == null) return null;
  if (data instanceof Uint8Array) return data;
  if (typeof ArrayBuffer !== "undefined" && ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer || Object.prototype.toString.call(data) === "[object ArrayBuffer]") return new Uint8Array(data);
  if (typeof data === "string") return base64ToBytes(data);
  return null;
}

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * Math.pow(2, -14) * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + f / 1024);
}

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Decode a protocol Buf ({shape, dtype, data}) into a typed array (row-major, little-endian).
 * `data` may be a DataView (what anywidget hands over for binary buffers), ArrayBuffer,
 * Uint8Array or other typed array, a base64 string, or a plain array of numbers (null = NaN).
 * @returns {{shape: number[], dtype: string, array: TypedArray}|null} null when buf is empty
 * @throws Error when the dtype is unknown or the byte count does not match the shape
 */
export function decodeBuf(buf) {
  if (buf == null || typeof buf !== "object") return null;
  const dtype = String(buf.dtype || "float32");
  const spec = DTYPES[dtype];
  if (!spec) throw new Error(`decodeBuf: unsupported dtype ${dtype}`);
  const [Ctor, size, getter] = spec;
  const shape = Array.isArray(buf.shape) ? buf.shape.map(Number) : null;
  if (Array.isArray(buf.data)) {
    const n = buf.data.length;
    const OutCtor = Ctor || Float32Array;
    const arr = new OutCtor(n);
    for (let i = 0; i < n; i++) arr[i] = buf.data[i] === null ? NaN : buf.data[i];
    if (shape && product(shape) !== n) throw new Error(`decodeBuf: ${n} values for shape [${shape}]`);
    return { shape: shape || [n], dtype, array: arr };
  }
  const bytes = toBytes(buf.data);
  if (bytes === null) throw new Error("decodeBuf: data is not a binary buffer");
  if (bytes.byteLength % size !== 0) throw new Error(`decodeBuf: ${bytes.byteLength} bytes is not a multiple of ${size} (${dtype})`);
  const n = bytes.byteLength / size;
  const sh = shape || [n];
  if (product(sh) !== n) throw new Error(`decodeBuf: ${n} ${dtype} values for shape [${sh}]`);
  if (dtype === "float16") {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const arr = new Float32Array(n);
    for (let i = 0; i < n; i++) arr[i] = halfToFloat(dv.getUint16(2 * i, true));
    return { shape: sh, dtype, array: arr };
  }
  if (size === 1) return { shape: sh, dtype, array: new Ctor(bytes.buffer, bytes.byteOffset, n) };
  if (LITTLE_ENDIAN) {
    // Typed arrays need an aligned offset; copy when the view is unaligned.
    if (bytes.byteOffset % size === 0) return { shape: sh, dtype, array: new Ctor(bytes.buffer, bytes.byteOffset, n) };
    return { shape: sh, dtype, array: new Ctor(bytes.slice().buffer, 0, n) };
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const arr = new Ctor(n);
  for (let i = 0; i < n; i++) arr[i] = dv[getter](i * size, true);
  return { shape: sh, dtype, array: arr };
}

/** Encode a typed array as a Buf with an ArrayBuffer (for mocks and tests). */
export function encodeBuf(array, shape, dtype) {
  const dt = dtype || (array instanceof Float64Array ? "float64" : array instanceof Uint8Array ? "uint8" : "float32");
  const Ctor = DTYPES[dt][0];
  const copy = array instanceof Ctor ? array.slice() : Ctor.from(array);
  return { shape: shape || [copy.length], dtype: dt, data: copy.buffer };
}

/** [start, end) of the original indices that downsampled bin `i` of `m` covers out of `n`. */
export function binRange(i, n, m) {
  if (m >= n) return [i, i + 1];
  return [Math.floor((i * n) / m), Math.floor(((i + 1) * n) / m)];
}

/**
 * Downsample a row-major matrix to at most maxRows × maxCols by binning.
 * mode "mean" averages each bin (NaN entries ignored; an all-NaN bin is NaN);
 * mode "absmax" keeps the entry of largest magnitude (keeps spikes visible).
 * @returns {{array: Float64Array, shape: [number, number], factor: [number, number]}}
 */
export function downsample(array, shape, maxRows, maxCols = maxRows, mode = "mean") {
  const [r, c] = shape.length === 1 ? [1, shape[0]] : shape;
  const r2 = Math.max(1, Math.min(r, Math.floor(maxRows)));
  const c2 = Math.max(1, Math.min(c, Math.floor(maxCols)));
  const out = new Float64Array(r2 * c2);
  const cnt = new Uint32Array(r2 * c2);
  const rowBin = new Int32Array(r);
  const colBin = new Int32Array(c);
  for (let i = 0; i < r2; i++) { const [a, b] = binRange(i, r, r2); for (let k = a; k < b; k++) rowBin[k] = i; }
  for (let j = 0; j < c2; j++) { const [a, b] = binRange(j, c, c2); for (let k = a; k < b; k++) colBin[k] = j; }
  const absmax = mode === "absmax";
  for (let i = 0; i < r; i++) {
    const base = rowBin[i] * c2;
    const off = i * c;
    for (let j = 0; j < c; j++) {
      const x = array[off + j];
      if (Number.isNaN(x)) continue;
      const k = base + colBin[j];
      if (absmax) { if (cnt[k] === 0 || Math.abs(x) > Math.abs(out[k])) out[k] = x; }
      else out[k] += x;
      cnt[k] += 1;
    }
  }
  for (let k = 0; k < out.length; k++) {
    if (cnt[k] === 0) out[k] = NaN;
    else if (!absmax) out[k] /= cnt[k];
  }
  return { array: out, shape: [r2, c2], factor: [r / r2, c / c2] };
}

/** Largest finite |x| in any of the arrays (0 when none). */
export function absMax(...arrays) {
  let m = 0;
  for (const a of arrays) {
    if (!a) continue;
    for (let i = 0; i < a.length; i++) {
      const v = Math.abs(a[i]);
      if (v > m && v !== Infinity) m = v;
    }
  }
  return m;
}

const SUP = { "-": "⁻", "+": "", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

/** Superscript digits of an integer: -4 -> "⁻⁴". */
export function superscript(n) {
  return String(n).split("").map((ch) => SUP[ch] ?? ch).join("");
}

/** The page's one way to write a power of ten: "×10⁻⁴". */
export function pow10(exp) {
  return `×10${superscript(exp)}`;
}

/**
 * Format a number with `sig` significant digits — the page's one number format: fixed for
 * 10⁻³ ≤ |x| < 10⁵, else "2.080×10⁻⁴"; "−" for minus, "—" for missing, "∞" for infinities.
 */
export function formatNumber(x, sig = 4) {
  const v = toNumber(x);
  if (v === null) return "—";
  if (v === Infinity) return "∞";
  if (v === -Infinity) return "−∞";
  if (v === 0) return "0";
  const a = Math.abs(v);
  let s = a >= 1e-3 && a < 1e5 ? v.toPrecision(sig) : null;
  if (s === null || s.includes("e")) {
    const [m, e] = v.toExponential(Math.max(0, sig - 1)).split("e");
    s = m + pow10(Number(e));
  }
  return s.replace(/-/g, "−");
}

/**
 * Split value ± stderr into display strings, with the precision set by the stderr:
 * the stderr keeps `sig` significant digits and the value is rounded to the same decimal.
 * @returns {{value: string, err: string|null, exp: number|null}} exp: shared power of ten
 *   (scientific form) or null; err null when there is no usable stderr.
 */
export function valueErrParts(value, stderr, { sig = 2, maxDecimals = 6, sci = false, maxSig = 6 } = {}) {
  const v = toNumber(value);
  const e = toNumber(stderr);
  if (v === null) return { value: "—", err: e === null ? null : formatNumber(e, sig), exp: null };
  if (!Number.isFinite(v)) return { value: formatNumber(v), err: null, exp: null };
  if (e === 0) return { value: formatNumber(v, 4), err: "0", exp: null };   // converged: exact to rounding
  if (e === null || !Number.isFinite(e) || e < 0) return { value: formatNumber(v, 4), err: null, exp: null };
  let d = Math.floor(Math.log10(e)) - (sig - 1);
  if (Math.round(e / Math.pow(10, d)) >= Math.pow(10, sig)) d += 1;
  const mag = Math.floor(Math.log10(Math.max(Math.abs(v), e)));
  if (mag - d + 1 > maxSig) {
    // the stderr is tiny next to the value (an exact or converged number): at most maxSig
    // digits of the value, and the stderr in its own notation
    return { value: formatNumber(v, maxSig), err: formatNumber(e, sig), exp: null };
  }
  const fixedOk = !sci && -d <= maxDecimals && mag < 6 && mag >= -4;
  const minus = (s) => s.replace("-", "−");
  if (fixedOk) {
    const dec = Math.max(0, -d);
    const q = Math.pow(10, d);
    const rv = Math.round(v / q) * q;
    const re = Math.round(e / q) * q;
    const vs = rv === 0 ? (0).toFixed(dec) : rv.toFixed(dec);
    return { value: minus(vs), err: re.toFixed(dec), exp: null };
  }
  const exp = mag;
  const scale = Math.pow(10, exp);
  const dec = Math.max(0, exp - d);
  return { value: minus((v / scale).toFixed(dec)), err: (e / scale).toFixed(dec), exp };
}

/**
 * Ways to write value ± stderr, most precise first, for a narrow slot: the stderr to 2 then 1
 * significant digits, each in the default form and then in scientific form with a shared
 * power of ten (which saves the leading zeros of small numbers). Duplicates are dropped.
 * A caller shows the first that fits (and wraps the last when none does).
 * @returns {Array<{value: string, err: string|null, exp: number|null}>}
 */
export function valueErrCandidates(value, stderr) {
  const first = valueErrParts(value, stderr);
  if (first.err === null) return [first]; // no stderr: one form only
  const out = [];
  const seen = new Set();
  for (const sig of [2, 1]) {
    const forms = [valueErrParts(value, stderr, { sig }), valueErrParts(value, stderr, { sig, sci: true })]
      .filter((p) => p.exp !== 0)
      .sort((a, b) => valueErrLength(a) - valueErrLength(b));
    for (const p of forms) {
      const key = `${p.value}|${p.err}|${p.exp}`;
      if (!seen.has(key)) { seen.add(key); out.push(p); }
    }
  }
  return out;
}

/** Display length of parts in characters ("(" and ")" and " ×10ⁿ" included). */
export function valueErrLength(p) {
  let n = p.value.length;
  if (p.err !== null) n += 3 + p.err.length;
  if (p.exp !== null) n += (p.err !== null ? 2 : 0) + 3 + String(p.exp).length;
  return n;
}

/** "0.532 ± 0.014", "(5.32 ± 0.14)×10⁻⁵", "0.5321" (no stderr) or "—" (the cards' format too). */
export function formatValueErr(value, stderr, opts) {
  const p = valueErrParts(value, stderr, opts);
  if (p.err === null) return p.value;
  if (p.exp === null) return `${p.value} ± ${p.err}`;
  return `(${p.value} ± ${p.err})${pow10(p.exp)}`;
}

/** Integer with thousands separators ("12,345"); "—" when missing. */
export function formatInt(n) {
  const v = toNumber(n);
  if (v === null) return "—";
  return Math.round(v).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Per-sample shape as "(4, 8, 8)"; "()" for a scalar; "—" when unknown. */
export function formatShape(shape) {
  if (!Array.isArray(shape)) return "—";
  return "(" + shape.join(", ") + (shape.length === 1 ? ",)" : ")");
}

/** Seconds as "0.4 s", "12 s", "2 min 03 s". */
export function formatDuration(seconds) {
  const s = toNumber(seconds);
  if (s === null || s < 0) return "";
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 60) return Math.round(s) + " s";
  const m = Math.floor(s / 60);
  const r = Math.floor(s - 60 * m);
  return `${m} min ${String(r).padStart(2, "0")} s`;
}

/** {value, stderr} of a metric entry from the estimate/block traits; NaN/null -> null. */
export function metricEntry(entry) {
  if (entry === null || entry === undefined) return { value: null, stderr: null };
  if (typeof entry === "number") return { value: toNumber(entry), stderr: null };
  return { value: toNumber(entry.value), stderr: toNumber(entry.stderr) };
}
