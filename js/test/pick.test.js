import { test } from "node:test";
import assert from "node:assert/strict";
import { pickNext, computeMessage, metricsSource, DEFAULT_SELECTION } from "../src/pick.js";

test("first click = v, second = w (+ compute), same node twice = diagonal, then start over", () => {
  let sel = { ...DEFAULT_SELECTION };
  let r = pickNext(sel, "blocks.0");
  assert.deepEqual(r, { patch: { v: "blocks.0", w: null }, compute: false });
  sel = { ...sel, ...r.patch };
  r = pickNext(sel, "blocks.2");
  assert.deepEqual(r, { patch: { w: "blocks.2" }, compute: true });
  sel = { ...sel, ...r.patch };
  r = pickNext(sel, "head");
  assert.deepEqual(r, { patch: { v: "head", w: null }, compute: false });
  sel = { ...sel, ...r.patch };
  r = pickNext(sel, "head");
  assert.deepEqual(r, { patch: { w: "head" }, compute: true });
});

test("compute message follows the protocol", () => {
  assert.equal(computeMessage({ v: null }), null);
  assert.deepEqual(computeMessage({ v: "a", w: "b", space: "parameter", mode: "exact", probes: 50.4, rel_ci: 0.05 }),
    { protocol: 1, type: "compute", v: "a", w: "b", space: "parameter", mode: "exact", probes: 50, rel_ci: 0.05, spectrum: false });
  // a diagonal pick (w = v, or w left out) also asks for the node's local spectrum
  assert.deepEqual(computeMessage({ v: "a", probes: "x", rel_ci: 0, space: "weird", mode: "weird" }),
    { protocol: 1, type: "compute", v: "a", w: "a", space: "activation", mode: "stream", probes: 200, rel_ci: null, spectrum: true });
  assert.equal(computeMessage({ v: "a", w: "a", space: "parameter" }).spectrum, true);
});

test("metric cards follow the newest job; exact blocks carry no stderr", () => {
  const est = { job: 3, v: "a", w: "b", probes: 40, done: false, metrics: { resonance: { value: 1, stderr: 0.1 } }, history: {} };
  const blk = { job: 2, v: "a", w: "b", space: "activation", metrics: { resonance: 0.9, gn_gap: null } };
  assert.equal(metricsSource(est, blk).source, "stream");
  const newer = metricsSource(est, { ...blk, job: 4 });
  assert.equal(newer.source, "exact");
  assert.deepEqual(newer.metrics.resonance, { value: 0.9, stderr: null });
  assert.deepEqual(newer.metrics.gn_gap, { value: null, stderr: null });
  assert.equal(metricsSource({}, {}), null);
  assert.equal(metricsSource(null, undefined), null);
  assert.equal(metricsSource({ job: 1, metrics: {} }, blk).source, "exact");
  const starting = metricsSource({ job: 5, v: "c", w: "d", probes: 0, budget: 200, metrics: {}, history: {} }, blk);
  assert.equal(starting.source, "stream");
  assert.deepEqual(starting.metrics, {});
});

test("isCurrent: a panel is current only for the picked pair, in the picked space", async () => {
  const { isCurrent } = await import("../src/pick.js");
  const sel = { v: "a", w: "b", space: "activation" };
  assert.equal(isCurrent({ v: "a", w: "b", space: "activation" }, sel), true);
  assert.equal(isCurrent({ v: "a", w: "b", space: "parameter" }, sel), false);
  assert.equal(isCurrent({ v: "b", w: "a", space: "activation" }, sel), false, "H[b, a] is another block");
  assert.equal(isCurrent({ v: "a", w: "b" }, { v: "a", w: null }), false, "a pick in progress");
  assert.equal(isCurrent({ node: "c", group: "c" }, { v: "c", w: "c" }), true);
  assert.equal(isCurrent({ node: "c", group: "c" }, sel), false);
  assert.equal(isCurrent({ node: null, group: "g" }, { v: null, w: null }), true, "asked from Python by group");
  assert.equal(isCurrent({ node: null, group: "g" }, sel), false);
  assert.equal(isCurrent(null, sel), false);
});

test("withSpectrum: a streamed diagonal parameter pick takes ‖H‖₂ and D from the same matrix's spectrum", async () => {
  const { withSpectrum } = await import("../src/pick.js");
  const src = { source: "stream", v: "g", w: "g", space: "parameter", metrics: {
    resonance: { value: 0.2, stderr: 0.01 }, spectral_norm: { value: 0.041, stderr: 0.07 }, stable_rank: { value: 0.9, stderr: 3 } } };
  const sp = { group: "g", node: "g", part: "full", pending: false, method: "lanczos+slq", stage: "slq", converged: true,
    stats: { lambda_max: 0.05663, lambda_min: -0.01 }, errors: { lambda_max: 1e-9 } };
  const out = withSpectrum(src, sp);
  assert.equal(out.metrics.spectral_norm.value, 0.05663);
  assert.equal(out.metrics.spectral_norm.stderr, 1e-9);
  assert.equal(out.metrics.spectral_norm.source, "spectrum");
  assert.ok(Math.abs(out.metrics.stable_rank.value - 0.04 / 0.05663 ** 2) < 1e-12);
  assert.ok(out.metrics.stable_rank.value >= 1 || out.metrics.stable_rank.stderr > 0);
  // λmin of larger magnitude wins
  assert.equal(withSpectrum(src, { ...sp, stats: { lambda_max: 0.01, lambda_min: -0.08 }, errors: {} }).metrics.spectral_norm.value, 0.08);
  // another matrix: nothing changes
  for (const other of [{ ...sp, group: "h" }, { ...sp, pending: true }, { ...sp, part: "gn" }, { ...sp, stats: {} }]) {
    assert.equal(withSpectrum(src, other), src);
  }
  assert.equal(withSpectrum({ ...src, space: "activation" }, sp).metrics.spectral_norm.value, 0.041);
  assert.equal(withSpectrum({ ...src, w: "h" }, sp).metrics.spectral_norm.value, 0.041);
});

test("inputs are checked with the kernel's limits and say why", async () => {
  const { checkProbes, checkRelCI } = await import("../src/pick.js");
  assert.deepEqual(checkProbes("200"), { ok: true, value: 200 });
  assert.deepEqual(checkProbes("1,000,000"), { ok: true, value: 1000000 });
  assert.match(checkProbes("5000000").error, /at most 1,000,000, the kernel's limit/);
  assert.match(checkProbes("100001", { probes: [1, 100000] }).error, /at most 100,000/);
  assert.match(checkProbes("0").error, /at least 1/);
  assert.match(checkProbes("2.5").error, /whole number/);
  assert.match(checkProbes("many").error, /not a number/);
  assert.match(checkProbes("").error, /type a whole number/);
  assert.deepEqual(checkRelCI(""), { ok: true, value: null });
  assert.deepEqual(checkRelCI("5"), { ok: true, value: 0.05 });
  assert.deepEqual(checkRelCI("5 %"), { ok: true, value: 0.05 });
  assert.deepEqual(checkRelCI("100"), { ok: true, value: 1 });
  assert.match(checkRelCI("250").error, /at most 100 %/);
  assert.match(checkRelCI("0").error, /never reached/);
  assert.match(checkRelCI("-3").error, /never reached/);
  assert.match(checkRelCI("abc").error, /not a number/);
});
