import { test } from "node:test";
import assert from "node:assert/strict";
import {
  decodeBuf, encodeBuf, toBytes, downsample, binRange, absMax, formatNumber, valueErrParts,
  formatValueErr, formatInt, formatShape, formatDuration, metricEntry, isMissing, toNumber,
} from "../src/codec.js";

const f32 = new Float32Array([1.5, -2, 0, NaN, 3.25, 1e-8]);

test("decodeBuf accepts DataView, ArrayBuffer, Uint8Array, typed arrays", () => {
  const ab = f32.buffer.slice(0);
  const forms = [
    new DataView(ab), ab, new Uint8Array(ab), new Float32Array(ab),
  ];
  for (const data of forms) {
    const d = decodeBuf({ shape: [2, 3], dtype: "float32", data });
    assert.deepEqual(d.shape, [2, 3]);
    assert.ok(d.array instanceof Float32Array);
    assert.equal(d.array.length, 6);
    assert.equal(d.array[0], 1.5);
    assert.equal(d.array[1], -2);
    assert.ok(Number.isNaN(d.array[3]));
  }
});

test("decodeBuf handles an unaligned DataView (copies)", () => {
  const big = new Uint8Array(3 + 16);
  big.set(new Uint8Array(new Float64Array([0.25, -7]).buffer), 3);
  const dv = new DataView(big.buffer, 3, 16);
  const d = decodeBuf({ shape: [2], dtype: "float64", data: dv });
  assert.ok(d.array instanceof Float64Array);
  assert.deepEqual([...d.array], [0.25, -7]);
});

test("decodeBuf: uint8 masks, float16, plain arrays with null, base64, empty", () => {
  const m = decodeBuf({ shape: [2, 2], dtype: "uint8", data: new Uint8Array([1, 0, 0, 1]).buffer });
  assert.ok(m.array instanceof Uint8Array);
  assert.deepEqual([...m.array], [1, 0, 0, 1]);
  const h = decodeBuf({ shape: [3], dtype: "float16", data: new Uint16Array([0x3c00, 0xc000, 0x7e00]).buffer });
  assert.equal(h.array[0], 1);
  assert.equal(h.array[1], -2);
  assert.ok(Number.isNaN(h.array[2]));
  const j = decodeBuf({ shape: [3], dtype: "float64", data: [1, null, 2] });
  assert.ok(Number.isNaN(j.array[1]));
  const b64 = Buffer.from(new Float32Array([4, 5]).buffer).toString("base64");
  assert.deepEqual([...decodeBuf({ shape: [2], dtype: "float32", data: b64 }).array], [4, 5]);
  assert.equal(decodeBuf(null), null);
  assert.equal(decodeBuf(undefined), null);
  const e = decodeBuf({ shape: [0, 4], dtype: "float32", data: new ArrayBuffer(0) });
  assert.equal(e.array.length, 0);
});

test("decodeBuf rejects mismatched shapes and unknown dtypes", () => {
  assert.throws(() => decodeBuf({ shape: [4], dtype: "float32", data: new ArrayBuffer(12) }), /shape/);
  assert.throws(() => decodeBuf({ shape: [1], dtype: "float32", data: new ArrayBuffer(5) }), /multiple/);
  assert.throws(() => decodeBuf({ shape: [1], dtype: "complex64", data: new ArrayBuffer(8) }), /dtype/);
  assert.throws(() => decodeBuf({ shape: [1], dtype: "float32", data: { x: 1 } }), /binary/);
});

test("encodeBuf round trip", () => {
  const b = encodeBuf(new Float64Array([1, 2, 3, 4]), [2, 2]);
  assert.equal(b.dtype, "float64");
  assert.ok(b.data instanceof ArrayBuffer);
  assert.deepEqual([...decodeBuf(b).array], [1, 2, 3, 4]);
  assert.equal(toBytes(null), null);
});

test("downsample: mean bins, absmax keeps spikes, NaN ignored, identity when small", () => {
  const a = Float64Array.from({ length: 16 }, (_, k) => k); // 4x4
  const d = downsample(a, [4, 4], 2, 2);
  assert.deepEqual(d.shape, [2, 2]);
  assert.deepEqual([...d.array], [2.5, 4.5, 10.5, 12.5]);
  assert.deepEqual(d.factor, [2, 2]);
  const spike = new Float64Array(16);
  spike[5] = -9;
  spike[6] = 1;
  assert.deepEqual([...downsample(spike, [4, 4], 2, 2, "absmax").array], [-9, 1, 0, 0]);
  const nan = Float64Array.from([NaN, 2, NaN, NaN]);
  const dn = downsample(nan, [2, 2], 1, 2);
  assert.equal(dn.array[1], 2);
  assert.ok(Number.isNaN(dn.array[0]));
  const same = downsample(a, [4, 4], 10, 10);
  assert.deepEqual([...same.array], [...a]);
  // uneven bins cover everything
  const u = downsample(new Float64Array(7 * 5).fill(1), [7, 5], 3, 2);
  assert.deepEqual(u.shape, [3, 2]);
  assert.ok([...u.array].every((v) => v === 1));
  assert.deepEqual(binRange(0, 7, 3), [0, 2]);
  assert.deepEqual(binRange(2, 7, 3), [4, 7]);
  assert.deepEqual(binRange(3, 5, 10), [3, 4]);
  // 1-D arrays are one row
  assert.deepEqual(downsample(Float64Array.from([1, 3, 5, 7]), [4], 1, 2).shape, [1, 2]);
});

test("absMax ignores NaN and infinities", () => {
  assert.equal(absMax(new Float32Array([1, -3, NaN]), null, [2, -Infinity]), 3);
  assert.equal(absMax(), 0);
});

test("value ± stderr and numbers: the page's one format (cases shared with the Python status line)", async () => {
  const { readFileSync } = await import("node:fs");
  const cases = JSON.parse(readFileSync(new URL("./format-cases.json", import.meta.url), "utf8"));
  for (const [v, e, want] of cases.value_err) assert.equal(formatValueErr(v, e), want, `${v} ± ${e}`);
  for (const [x, sig, want] of cases.number) assert.equal(formatNumber(x, sig), want, String(x));
  assert.equal(formatValueErr(NaN, NaN), "—");
  assert.equal(formatNumber(NaN), "—");
  assert.equal(formatNumber(Infinity), "∞");
  assert.deepEqual(valueErrParts(5.3217e-7, 1.43e-8), { value: "5.32", err: "0.14", exp: -7 });
  assert.ok(cases.value_err.length >= 15 && cases.number.length >= 10);
});

test("integer, shape and duration helpers", () => {
  assert.equal(formatInt(1234567), "1,234,567");
  assert.equal(formatInt(null), "—");
  assert.equal(formatShape([16]), "(16,)");
  assert.equal(formatShape([4, 8, 8]), "(4, 8, 8)");
  assert.equal(formatShape(undefined), "—");
  assert.equal(formatDuration(0.42), "0.4 s");
  assert.equal(formatDuration(12.4), "12 s");
  assert.equal(formatDuration(123), "2 min 03 s");
  assert.equal(formatDuration(null), "");
  assert.deepEqual(metricEntry({ value: null, stderr: 0.1 }), { value: null, stderr: 0.1 });
  assert.deepEqual(metricEntry(0.3), { value: 0.3, stderr: null });
  assert.deepEqual(metricEntry(undefined), { value: null, stderr: null });
  assert.ok(isMissing(null) && isMissing(NaN) && isMissing(undefined) && !isMissing(0));
  assert.equal(toNumber("2.5"), 2.5);
  assert.equal(toNumber("x"), null);
});

test("value ± stderr candidates for narrow slots: shortest forms, precision first", async () => {
  const { valueErrCandidates, valueErrLength } = await import("../src/codec.js");
  const c = valueErrCandidates(0.0676, 0.00078);
  assert.deepEqual(c[0], { value: "0.06760", err: "0.00078", exp: null });
  assert.ok(c.some((p) => p.exp === -2), "a scientific form is offered");
  assert.deepEqual(c[c.length - 1], { value: "6.76", err: "0.08", exp: -2 });
  assert.ok(c.some((p) => p.value === "0.0676" && p.err === "0.0008"));
  // forms of one precision are ordered by length; 2 digits of the stderr before 1
  assert.ok(valueErrLength(c[0]) <= valueErrLength(c[1]));
  assert.deepEqual(valueErrCandidates(0.5, null), [{ value: "0.5000", err: null, exp: null }]);
  assert.ok(valueErrCandidates(2.706, 0.0001234).every((p) => p.exp !== 0));   // never "×10⁰"
  assert.equal(valueErrLength({ value: "5.32", err: "0.14", exp: -7 }), "(5.32 ± 0.14)×10-7".length);
});
