// Checkpoint replay of a tracked training run (the `run` trait). Pure: no DOM.
//
// run = {name, part, steps: [..], stats: [names], normalized?: [names], groups: [names],
//        values: {stat: {group: [value|null per step]}}, losses: {train: [..], test: [..]}}
//
// One statistic is shown at a time; its colour scale is shared by every checkpoint (and
// every group), so a node getting darker over the slider really means the value grew.

import { toNumber } from "./codec.js";
import { PALETTES, rgbaCss } from "./scale.js";

const NAMES = {
  lambda_max: "λmax", lambda_min: "λmin", trace: "trace", trace_share: "trace share",
  frobenius: "‖H‖F", negative_mass: "negative mass", negative_fraction: "negative fraction",
  abs_min_over_max: "|λmin|/λmax", condition_number: "condition number", spectral_entropy: "spectral entropy",
  effective_rank: "effective rank", stable_rank: "stable rank", numerical_rank: "numerical rank",
  rank_fraction: "rank fraction", "lambda_min/lambda_max": "λmin/λmax",
};

/** Readable label of a statistic name ("lambda_max/trace" -> "λmax / trace"). */
export function statLabel(name) {
  const n = String(name);
  if (NAMES[n]) return NAMES[n];
  if (n.includes("/")) return n.split("/").map((p) => NAMES[p] || p.replace(/_/g, " ")).join(" / ");
  return n.replace(/_/g, " ");
}

/** The run trait if it holds at least one checkpoint and one statistic, else null. */
export function normalizeRun(run) {
  if (!run || typeof run !== "object" || !Array.isArray(run.steps) || run.steps.length === 0) return null;
  if (!run.values || typeof run.values !== "object") return null;
  const stats = (Array.isArray(run.stats) ? run.stats : Object.keys(run.values)).filter((s) => run.values[s]);
  if (!stats.length) return null;
  const groups = Array.isArray(run.groups) ? run.groups.map(String) : [];
  return { ...run, stats, groups, normalized: Array.isArray(run.normalized) ? run.normalized : null };
}

/**
 * The statistics to offer, raw first then normalised: [{name, label, normalized}].
 * "normalized" comes from run.normalized when given, else from the name (a ratio "a/b" or
 * rank_fraction).
 */
export function replayStats(run) {
  const r = normalizeRun(run);
  if (!r) return [];
  const norm = r.normalized ? new Set(r.normalized) : null;
  const isNorm = (s) => (norm ? norm.has(s) : s.includes("/") || s === "rank_fraction");
  const out = r.stats.map((name) => ({ name, label: statLabel(name), normalized: isNorm(name) }));
  return [...out.filter((s) => !s.normalized), ...out.filter((s) => s.normalized)];
}

/** Default statistic: λmax when tracked, else the first one. */
export function defaultStat(run) {
  const s = replayStats(run);
  if (!s.length) return null;
  return (s.find((x) => x.name === "lambda_max") || s[0]).name;
}

/** Every finite value of a statistic over all groups and checkpoints. */
export function statValues(run, stat) {
  const per = (run && run.values && run.values[stat]) || {};
  const out = [];
  for (const g of Object.keys(per)) {
    for (const x of per[g] || []) {
      const v = toNumber(x);
      if (v !== null && Number.isFinite(v)) out.push(v);
    }
  }
  return out;
}

/**
 * Range of a statistic shared by all checkpoints: {min, max, log, n}.
 * log (when `log` is "auto"): every value > 0 and max/min ≥ 50 (curvature often spans decades
 * over training; a linear scale would paint all but the largest the same).
 * No finite value: {min: null, max: null, log: false, n: 0}.
 */
export function statRange(run, stat, { log = "auto" } = {}) {
  const v = statValues(run, stat);
  if (!v.length) return { min: null, max: null, log: false, n: 0 };
  let min = Infinity;
  let max = -Infinity;
  for (const x of v) { if (x < min) min = x; if (x > max) max = x; }
  const useLog = log === "auto" ? min > 0 && max / min >= 50 : !!log && min > 0;
  return { min, max, log: useLog, n: v.length };
}

/**
 * Sequential colour scale over a range: t(x) in [0, 1] (null for a missing value), rgba(x)
 * the palette's sequential hue with opacity 0.12 … 0.72 (the lowest value stays visible; node
 * text stays readable over the highest, on light and dark backgrounds), css(x).
 * A range with min = max maps everything to 0.5.
 * @param {{min, max, log}} range
 * @param {{dark?: boolean, color?: number[]}} [opts]
 */
export function replayScale(range, { dark = false, color = null } = {}) {
  const c = color || (dark ? PALETTES.dark.seq : PALETTES.light.seq);
  const { min, max, log } = range || {};
  const ok = min !== null && min !== undefined && max !== null && max !== undefined;
  const lo = ok ? (log ? Math.log10(min) : min) : 0;
  const hi = ok ? (log ? Math.log10(max) : max) : 1;
  const t = (x) => {
    const v = toNumber(x);
    if (v === null || !Number.isFinite(v) || !ok) return null;
    if (log && v <= 0) return 0;
    const u = log ? Math.log10(v) : v;
    if (!(hi > lo)) return 0.5;
    return Math.min(1, Math.max(0, (u - lo) / (hi - lo)));
  };
  const rgba = (x) => {
    const s = t(x);
    if (s === null) return null;
    return [c[0], c[1], c[2], Math.round(255 * (0.12 + 0.6 * s))];
  };
  return { min: ok ? min : null, max: ok ? max : null, log: !!log, color: c, t, rgba, css: (x) => rgbaCss(rgba(x)) };
}

/** CSS linear-gradient of a scale (legend). */
export function gradientCss(scale, stops = 6) {
  const parts = [];
  for (let i = 0; i < stops; i++) {
    const s = i / (stops - 1);
    const a = Math.round((0.12 + 0.6 * s) * 1000) / 1000;
    parts.push(`rgba(${scale.color[0]}, ${scale.color[1]}, ${scale.color[2]}, ${a}) ${Math.round(s * 100)}%`);
  }
  return `linear-gradient(to right, ${parts.join(", ")})`;
}

/** Clamp a checkpoint index into the run. */
export function clampIndex(run, index) {
  const n = run && Array.isArray(run.steps) ? run.steps.length : 0;
  if (!n) return 0;
  const i = Math.round(Number(index));
  return Number.isFinite(i) ? Math.min(n - 1, Math.max(0, i)) : 0;
}

/** Map group -> value (number or null) of a statistic at checkpoint `index`. */
export function valuesAt(run, stat, index) {
  const out = new Map();
  const r = normalizeRun(run);
  if (!r) return out;
  const i = clampIndex(r, index);
  const per = r.values[stat] || {};
  for (const g of r.groups.length ? r.groups : Object.keys(per)) {
    const v = toNumber((per[g] || [])[i]);
    out.set(g, v !== null && Number.isFinite(v) ? v : null);
  }
  return out;
}

/** {step, train, test} at checkpoint `index` (losses null when not recorded). */
export function checkpointAt(run, index) {
  const r = normalizeRun(run);
  if (!r) return { step: null, train: null, test: null, index: 0, count: 0 };
  const i = clampIndex(r, index);
  const loss = (k) => {
    const v = toNumber(((r.losses || {})[k] || [])[i]);
    return v !== null && Number.isFinite(v) ? v : null;
  };
  return { step: toNumber(r.steps[i]), train: loss("train"), test: loss("test"), index: i, count: r.steps.length };
}

/**
 * Which drawn node shows each group: `resolve(group)` returns the visible node id standing for
 * a module name (or null when it is hidden, e.g. inside a collapsed block).
 * @returns {{nodes: Map<nodeId, {group, value}>, hidden: string[]}} the first group wins a node
 */
export function nodeValues(values, resolve) {
  const nodes = new Map();
  const hidden = [];
  for (const [g, value] of values) {
    const id = resolve(g);
    if (id === null || id === undefined) { hidden.push(g); continue; }
    if (!nodes.has(id)) nodes.set(String(id), { group: g, value });
  }
  return { nodes, hidden };
}
