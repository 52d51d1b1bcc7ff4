import { test } from "node:test";
import assert from "node:assert/strict";
import { histogram, extremes, statError, spectrumStage } from "../src/spectrumpanel.js";

const base = { job: 7, group: "blocks.1.0", method: "lanczos+slq", n: 4160, pending: false, done: false,
  budget: { lanczos_iterations: 200, slq_probes: 16 }, stats: {}, errors: {} };

test("histogram bins every finite value", () => {
  const h = histogram([0, 1, 1, 2, NaN], 2);
  assert.deepEqual(h.counts, [1, 3]);
  assert.deepEqual(h.edges, [0, 1, 2]);
  assert.deepEqual(histogram([]).counts, [0]);
});

test("extremes pair Ritz values with their residual bounds", () => {
  const ext = extremes({ top: [3, 2, null], top_bounds: [0.1, 0.2, 0.3], bottom: [-1], bottom_bounds: null });
  assert.deepEqual(ext, { top: [{ value: 3, bound: 0.1 }, { value: 2, bound: 0.2 }], bottom: [{ value: -1, bound: null }] });
  assert.deepEqual(extremes(null), { top: [], bottom: [] });
  assert.equal(statError({ errors: { lambda_max: 0.01, trace: 0, lambda_min: null } }, "lambda_max"), 0.01);
  assert.equal(statError({ errors: { trace: 0 } }, "trace"), null);
  assert.equal(statError({}, "trace"), null);
});

test("stage of a streaming spectrum: Lanczos steps, then SLQ probes, then final", () => {
  assert.equal(spectrumStage(null).key, "none");
  assert.equal(spectrumStage({}).key, "none");
  let s = spectrumStage({ ...base, stage: "lanczos", lanczos_iterations: 37, converged: false, progress: 0.09 });
  assert.deepEqual(s, { key: "lanczos", text: "Lanczos 37/200 steps", progress: 0.09, done: false });
  s = spectrumStage({ ...base, stage: "slq", lanczos_iterations: 200, converged: true, slq_probes: 8, progress: 0.75 });
  assert.equal(s.key, "slq");
  assert.equal(s.text, "Lanczos 200/200 steps, converged · SLQ 8/16 probes");
  s = spectrumStage({ ...base, stage: "slq", lanczos_iterations: 200, converged: false, slq_probes: 16, done: true, progress: 1 });
  assert.deepEqual(s, { key: "done", text: "Lanczos 200/200 steps, not converged · SLQ 16/16 probes", progress: 1, done: true });
  s = spectrumStage({ ...base, method: "exact", stage: "exact", n: 272, done: true });
  assert.equal(s.text, "exact · all 272 eigenvalues");
});

test("stage: no parameters, pending follow-up, cancelled and superseded", () => {
  assert.equal(spectrumStage({ job: 3, group: null, message: "x (GELU) owns no parameters" }).key, "empty");
  const pending = { job: 3, group: "a", node: "a", pending: true };
  assert.equal(spectrumStage(pending, { job: 3, state: "running" }).key, "pending");
  assert.equal(spectrumStage({ ...pending, stage: "starting" }, { job: 3, state: "running" }).key, "starting");
  assert.deepEqual(spectrumStage(pending, { job: 3, state: "cancelled" }),
    { key: "stopped", text: "cancelled before it started", progress: null, done: false });
  assert.equal(spectrumStage(pending, { job: 4, state: "running" }).key, "stopped");
  const running = { ...base, job: 9, stage: "lanczos", lanczos_iterations: 5, progress: 0.01 };
  const c = spectrumStage(running, { job: 9, state: "cancelled" });
  assert.equal(c.key, "stopped");
  assert.match(c.text, /^cancelled · Lanczos 5\/200/);
  assert.equal(spectrumStage(running, { job: 8, state: "done" }).key, "lanczos");     // an older status says nothing
  assert.equal(spectrumStage({ ...running, done: true }, { job: 9, state: "cancelled" }).key, "done");
});
