// The harness's fake model + simulated kernel (used by the browser harness) behave as the
// protocol says: streaming snapshots with shrinking stderr, done / cancelled / error states.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MockModel, MockKernel, symEig } from "../harness/mock-model.js";
import { RESIDUAL_MLP } from "../harness/sample-graphs.js";
import { decodeBuf } from "../src/codec.js";

const until = (pred, ms = 5000) => new Promise((resolve, reject) => {
  const t0 = Date.now();
  const iv = setInterval(() => {
    if (pred()) { clearInterval(iv); resolve(); } else if (Date.now() - t0 > ms) { clearInterval(iv); reject(new Error("timeout")); }
  }, 2);
});

test("streaming estimate: snapshots, shrinking stderr, done", async () => {
  const m = new MockModel({ graph: RESIDUAL_MLP });
  new MockKernel(m, { tickMs: 2 });
  const seen = [];
  m.on("change:estimate", (e) => seen.push(e));
  m.send({ protocol: 1, type: "compute", v: "inp", w: "add_1", space: "activation", mode: "stream", probes: 50, rel_ci: null });
  assert.equal(m.get("status").state, "running");
  await until(() => m.get("status").state === "done");
  assert.equal(seen.length, 5);
  assert.deepEqual(seen.map((e) => e.probes), [10, 20, 30, 40, 50]);
  const se = seen.map((e) => e.metrics.resonance.stderr);
  assert.ok(se.every((x, i) => i === 0 || x < se[i - 1]));
  assert.equal(seen.at(-1).history.resonance.length, 5);
  assert.equal(m.get("status").progress, 1);
});

test("cancel, errors, exact block with binary Bufs, coupling map", async () => {
  const m = new MockModel({ graph: RESIDUAL_MLP });
  new MockKernel(m, { tickMs: 2, blockDelayMs: 12, mapRowMs: 2 });
  m.send({ protocol: 1, type: "compute", v: "inp", w: "inp", space: "activation", mode: "stream", probes: 100000, rel_ci: null });
  await until(() => (m.get("estimate") || {}).probes > 0);
  m.send({ protocol: 1, type: "cancel" });
  assert.equal(m.get("status").state, "cancelled");
  m.send({ protocol: 2, type: "cancel" });
  assert.equal(m.get("status").state, "error");
  m.send({ protocol: 1, type: "nope" });
  assert.match(m.get("status").message, /unknown message type/);
  m.send({ protocol: 1, type: "compute", v: "blocks.0.f.1", w: "blocks.0.f.1", space: "activation", mode: "exact", probes: 1, rel_ci: null });
  await until(() => m.get("status").state === "done");
  const b = m.get("block");
  assert.ok(b.parts.full.data instanceof DataView);
  const full = decodeBuf(b.parts.full);
  assert.deepEqual(full.shape, [16, 16]);
  const eig = decodeBuf(b.eigenvalues).array;
  const tr = Array.from({ length: 16 }, (_, i) => full.array[i * 16 + i]).reduce((a, c) => a + c, 0);
  assert.ok(Math.abs(eig.reduce((a, c) => a + c, 0) - tr) < 1e-3 * (1 + Math.abs(tr)));
  m.send({ protocol: 1, type: "coupling_map", space: "activation", nodes: ["inp", "add", "head"] });
  await until(() => m.get("status").state === "done");
  const map = m.get("coupling_map");
  assert.deepEqual(map.names, ["inp", "add", "head"]);
  assert.ok(map.done);
  assert.ok(decodeBuf(map.filled).array.every((x) => x === 1));
});

test("symEig on a known matrix", () => {
  const ev = symEig([2, 1, 0, 1, 2, 0, 0, 0, -1], 3);
  assert.ok(Math.abs(ev[0] + 1) < 1e-9 && Math.abs(ev[1] - 1) < 1e-9 && Math.abs(ev[2] - 3) < 1e-9);
});
