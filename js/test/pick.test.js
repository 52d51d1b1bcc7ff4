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
