import { test } from "node:test";
import assert from "node:assert/strict";
import {
  symmetricVmax, makeDiverging, makeSequential, rgbaCss, blend, fillPixels, parseColor, luminance, isDark,
  niceTicks, POS, NEG, MISSING, PALETTES, paletteFor,
} from "../src/scale.js";

test("shared vmax over full/GN/tensor is the largest |x|", () => {
  const full = new Float32Array([1, -4, 2]);
  const gn = new Float32Array([0.5, 3, NaN]);
  const tensor = new Float32Array([-5.5, 0, Infinity]);
  assert.equal(symmetricVmax(full, gn, tensor), 5.5);
  assert.equal(symmetricVmax(null, 2, -7), 7);
  assert.equal(symmetricVmax(), 0);
});

test("diverging scale is symmetric around 0 with transparent zero", () => {
  const s = makeDiverging({ vmax: 2 });
  assert.deepEqual(s.rgba(0), [...POS, 0]);
  const p = s.rgba(1), n = s.rgba(-1);
  assert.deepEqual(p.slice(0, 3), POS);
  assert.deepEqual(n.slice(0, 3), NEG);
  assert.equal(p[3], n[3], "same opacity for ±x");
  assert.equal(s.rgba(2)[3], 255);
  assert.equal(s.rgba(50)[3], 255, "clamped");
  assert.ok(s.rgba(0.5)[3] < s.rgba(1.5)[3], "monotone in |x|");
  assert.equal(s.rgba(NaN), null);
  assert.equal(s.rgba(null), null);
  assert.equal(s.t(-1), -0.5);
  assert.equal(makeDiverging({ vmax: 0 }).vmax, 1, "degenerate vmax");
  const g = makeDiverging({ vmax: 1, gamma: 0.5 });
  assert.ok(Math.abs(g.t(0.25) - 0.5) < 1e-12);
});

test("colours stay distinguishable from both light and dark backgrounds", () => {
  const s = makeDiverging({ vmax: 1 });
  const white = [255, 255, 255], dark = [17, 17, 17];
  for (const bg of [white, dark]) {
    for (const x of [1, -1]) {
      const c = blend(s.rgba(x), bg);
      const l1 = luminance(c), l2 = luminance(bg);
      const contrast = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
      assert.ok(contrast >= 3, `contrast ${contrast.toFixed(2)} of ${x} on ${bg}`);
    }
    assert.deepEqual(blend(s.rgba(0), bg), bg);
  }
});

test("palettes: lighter hues on dark backgrounds, contrast kept", () => {
  assert.equal(paletteFor("#ffffff"), PALETTES.light);
  assert.equal(paletteFor("rgb(33, 33, 33)"), PALETTES.dark);
  assert.equal(paletteFor("var(--nope)"), PALETTES.light);
  const dark = [33, 33, 33];
  const p = PALETTES.dark;
  const s = makeDiverging({ vmax: 1, pos: p.pos, neg: p.neg });
  for (const x of [0.5, -0.5]) {
    const half = luminance(blend(s.rgba(x), dark));
    const lightHalf = luminance(blend(makeDiverging({ vmax: 1 }).rgba(x), dark));
    assert.ok(half > lightHalf, "dark palette brighter at mid values on a dark background");
  }
});

test("sequential scale (linear and log)", () => {
  const s = makeSequential({ vmax: 1 });
  assert.equal(s.rgba(0)[3], 0);
  assert.equal(s.rgba(1)[3], 255);
  assert.equal(s.rgba(NaN), null);
  const l = makeSequential({ vmax: 100, log: true, decades: 2 });
  assert.equal(l.t(100), 1);
  assert.equal(l.t(10), 0.5);
  assert.equal(l.t(0.01), 0);
});

test("fillPixels with a mask", () => {
  const px = new Uint8ClampedArray(12);
  fillPixels(px, [1, NaN, -1], makeDiverging({ vmax: 1 }), [1, 1, 0]);
  assert.deepEqual([...px.slice(0, 4)], [...POS, 255]);
  assert.deepEqual([...px.slice(4, 8)], MISSING);
  assert.deepEqual([...px.slice(8, 12)], MISSING);
});

test("css, colour parsing, luminance, ticks", () => {
  assert.equal(rgbaCss(null), "transparent");
  assert.equal(rgbaCss([255, 0, 0, 255]), "rgba(255, 0, 0, 1)");
  assert.deepEqual(parseColor("#fff"), [255, 255, 255, 1]);
  assert.deepEqual(parseColor(" #111111 "), [17, 17, 17, 1]);
  assert.deepEqual(parseColor("rgb(10, 20, 30)"), [10, 20, 30, 1]);
  assert.deepEqual(parseColor("rgba(10, 20, 30, 0.5)"), [10, 20, 30, 0.5]);
  assert.deepEqual(parseColor("rgb(10 20 30 / 50%)"), [10, 20, 30, 0.5]);
  assert.equal(parseColor("var(--x)"), null);
  assert.ok(isDark([17, 17, 17]) && !isDark([255, 255, 255]));
  assert.deepEqual(niceTicks(-1, 1, 5), [-1, -0.5, 0, 0.5, 1]);
  assert.deepEqual(niceTicks(0, 10, 3), [0, 5, 10]);
  assert.deepEqual(niceTicks(1, 1), [1]);
});

test("dark theme: coupling-map colours keep a visible floor (contrast on a dark panel)", async () => {
  const { paletteFor, makeSequential, luminance, blend } = await import("../src/scale.js");
  const dark = paletteFor("#111111");
  const light = paletteFor("#ffffff");
  assert.ok(dark.floor > light.floor);
  const sc = makeSequential({ vmax: 1, color: dark.seq, floor: dark.floor });
  const bg = [17, 17, 17];
  // the smallest non-zero value differs from the background by a visible luminance step
  const lo = blend(sc.rgba(1e-6), bg);
  assert.ok(luminance(lo) - luminance(bg) > 0.02, String(lo));
  assert.equal(sc.rgba(0)[3], 0);
  assert.equal(sc.rgba(1)[3], 255);
});
