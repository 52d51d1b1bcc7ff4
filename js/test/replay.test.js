import { test } from "node:test";
import assert from "node:assert/strict";
import {
  statLabel, normalizeRun, replayStats, defaultStat, statValues, statRange, replayScale, gradientCss,
  clampIndex, valuesAt, checkpointAt, nodeValues,
} from "../src/replay.js";
import { PALETTES } from "../src/scale.js";

// the shape of the `run` trait (hessexplore.widget.run_json)
const RUN = {
  name: "mlp", part: "full", steps: [0, 20, 40],
  stats: ["lambda_max", "trace", "negative_mass", "lambda_max/trace"],
  normalized: ["lambda_max/trace"],
  groups: ["blocks.0.0", "blocks.1.0", "head"],
  values: {
    lambda_max: { "blocks.0.0": [1, 2, 4], "blocks.1.0": [0.5, null, 3], head: [8, 6, 5] },
    trace: { "blocks.0.0": [2, 3, 5], "blocks.1.0": [1, 1, 1], head: [9, 9, 9] },
    negative_mass: { "blocks.0.0": [0, 0.1, 0.2], "blocks.1.0": [null, null, null], head: [0, 0, 0] },
    "lambda_max/trace": { "blocks.0.0": [0.5, 0.66, 0.8], "blocks.1.0": [0.5, null, 1], head: [0.9, 0.7, 0.55] },
  },
  losses: { train: [1.1, 0.7, 0.4], test: [1.2, null, 0.6] },
};

test("stat labels", () => {
  assert.equal(statLabel("lambda_max"), "λmax");
  assert.equal(statLabel("negative_mass"), "negative mass");
  assert.equal(statLabel("lambda_max/trace"), "λmax / trace");
  assert.equal(statLabel("frobenius/lambda_max"), "‖H‖F / λmax");
  assert.equal(statLabel("some_new_stat"), "some new stat");
});

test("stats extraction: raw first, then normalised; default λmax; empty runs are null", () => {
  assert.deepEqual(replayStats(RUN).map((s) => [s.name, s.normalized]),
    [["lambda_max", false], ["trace", false], ["negative_mass", false], ["lambda_max/trace", true]]);
  assert.equal(replayStats(RUN)[3].label, "λmax / trace");
  assert.equal(defaultStat(RUN), "lambda_max");
  assert.equal(defaultStat({ ...RUN, stats: ["trace"] }), "trace");
  // without the `normalized` list a ratio name counts as normalised
  const noList = { ...RUN, normalized: undefined, stats: ["lambda_max/trace", "trace"] };
  assert.deepEqual(replayStats(noList).map((s) => s.name), ["trace", "lambda_max/trace"]);
  for (const bad of [null, {}, { steps: [] }, { ...RUN, steps: [] }, { ...RUN, values: {} }, { ...RUN, stats: ["zzz"] }]) {
    assert.equal(normalizeRun(bad), null);
    assert.deepEqual(replayStats(bad), []);
    assert.equal(defaultStat(bad), null);
  }
  assert.deepEqual(statValues(RUN, "negative_mass").sort(), [0, 0, 0, 0, 0.1, 0.2]);
  assert.deepEqual(statValues(RUN, "nope"), []);
});

test("range shared by every checkpoint; log only when positive and spanning decades", () => {
  assert.deepEqual(statRange(RUN, "lambda_max"), { min: 0.5, max: 8, log: false, n: 8 });
  const wide = { ...RUN, values: { lambda_max: { a: [0.01, 0.1], b: [1, 10] } } };
  assert.equal(statRange(wide, "lambda_max").log, true);
  assert.equal(statRange(wide, "lambda_max", { log: false }).log, false);
  const signed = { ...RUN, values: { lambda_min: { a: [-5, -0.01], b: [0.01, 1] } } };
  assert.equal(statRange(signed, "lambda_min").log, false);
  assert.deepEqual(statRange(RUN, "nope"), { min: null, max: null, log: false, n: 0 });
});

test("colour mapping: monotone, clamped, missing -> null, same colour for the same value at every step", () => {
  const sc = replayScale(statRange(RUN, "lambda_max"));
  assert.equal(sc.t(0.5), 0);
  assert.equal(sc.t(8), 1);
  assert.equal(sc.t(4.25), 0.5);
  assert.equal(sc.t(100), 1);
  assert.equal(sc.t(-3), 0);
  assert.equal(sc.t(null), null);
  assert.equal(sc.t(NaN), null);
  assert.equal(sc.rgba(null), null);
  assert.equal(sc.css(null), "transparent");
  const a = sc.rgba(0.5);
  const b = sc.rgba(8);
  assert.deepEqual(a.slice(0, 3), PALETTES.light.seq);
  assert.ok(a[3] > 0 && a[3] < b[3] && b[3] <= Math.round(255 * 0.72), `${a} ${b}`);   // lowest visible, top readable
  for (const x of [1, 2, 3, 4, 5, 6]) assert.ok(sc.rgba(x)[3] <= sc.rgba(x + 1)[3]);
  // dark theme: the lighter hue of the dark palette
  assert.deepEqual(replayScale(statRange(RUN, "lambda_max"), { dark: true }).rgba(2).slice(0, 3), PALETTES.dark.seq);
  // log scale: decades equally spaced
  const lg = replayScale({ min: 0.01, max: 10, log: true });
  assert.ok(Math.abs(lg.t(0.1) - 1 / 3) < 1e-12 && Math.abs(lg.t(1) - 2 / 3) < 1e-12);
  assert.equal(lg.t(0), 0);
  // degenerate range: everything mid-scale; no range: nothing coloured
  assert.equal(replayScale({ min: 2, max: 2, log: false }).t(2), 0.5);
  assert.equal(replayScale({ min: null, max: null }).t(2), null);
  assert.match(gradientCss(sc), /^linear-gradient\(to right, rgba\(112, 72, 196, 0\.12\) 0%, .* 100%\)$/);
});

test("values and losses at a checkpoint", () => {
  assert.deepEqual([...valuesAt(RUN, "lambda_max", 1)], [["blocks.0.0", 2], ["blocks.1.0", null], ["head", 6]]);
  assert.deepEqual([...valuesAt(RUN, "lambda_max", 99)], [["blocks.0.0", 4], ["blocks.1.0", 3], ["head", 5]]);
  assert.equal(valuesAt(null, "lambda_max", 0).size, 0);
  assert.deepEqual(checkpointAt(RUN, 1), { step: 20, train: 0.7, test: null, index: 1, count: 3 });
  assert.deepEqual(checkpointAt({ ...RUN, losses: undefined }, 0), { step: 0, train: null, test: null, index: 0, count: 3 });
  assert.equal(clampIndex(RUN, -4), 0);
  assert.equal(clampIndex(RUN, "2"), 2);
  assert.equal(clampIndex(RUN, "x"), 0);
});

test("groups map to drawn nodes; hidden ones are reported; the first group wins a node", () => {
  const drawn = { "blocks.0.0": "blocks.0.0", head: "head", "blocks.1": "blocks.1" };
  const values = new Map([["blocks.0.0", 1], ["blocks.1.0", 2], ["head", null], ["blocks.1", 7]]);
  const { nodes, hidden } = nodeValues(values, (g) => drawn[g] ?? null);
  assert.deepEqual([...nodes], [["blocks.0.0", { group: "blocks.0.0", value: 1 }], ["head", { group: "head", value: null }],
    ["blocks.1", { group: "blocks.1", value: 7 }]]);
  assert.deepEqual(hidden, ["blocks.1.0"]);
  const both = nodeValues(new Map([["a", 1], ["b", 2]]), () => "n");
  assert.deepEqual([...both.nodes], [["n", { group: "a", value: 1 }]]);
});
