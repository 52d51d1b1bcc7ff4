// Pure selection logic of the explorer (no DOM): the pick state machine, the compute
// message, and which trait feeds the metric cards.

export const PROTOCOL = 1;
export const DEFAULT_SELECTION = { v: null, w: null, space: "activation", mode: "stream", probes: 200, rel_ci: null };

/**
 * Next selection after picking `name`: the first pick sets v (w cleared), the second sets w
 * and asks for a compute (picking v again gives the diagonal block). A pick after a complete
 * pair starts over.
 * @returns {{patch: object, compute: boolean}}
 */
export function pickNext(sel, name) {
  if (sel && sel.v != null && sel.w == null) return { patch: { w: name }, compute: true };
  return { patch: { v: name, w: null }, compute: false };
}

/**
 * The `compute` message for a selection (w defaults to v), or null without v. A diagonal pick
 * (w = v) asks for the local spectrum of the node's parameter group as a follow-up
 * (`spectrum: true`).
 */
export function computeMessage(sel) {
  const s = { ...DEFAULT_SELECTION, ...(sel || {}) };
  if (s.v == null) return null;
  const probes = Math.max(1, Math.round(Number(s.probes) || DEFAULT_SELECTION.probes));
  const v = String(s.v);
  const w = String(s.w ?? s.v);
  return {
    protocol: PROTOCOL, type: "compute", v, w,
    space: s.space === "parameter" ? "parameter" : "activation",
    mode: s.mode === "exact" ? "exact" : "stream",
    probes,
    rel_ci: typeof s.rel_ci === "number" && s.rel_ci > 0 ? s.rel_ci : null,
    spectrum: v === w,
  };
}

function nonEmpty(o) {
  return !!o && typeof o === "object" && Object.keys(o).length > 0;
}

/**
 * What the metric cards show: the newer (by job number) of the streamed `estimate` and the
 * exact `block` metrics; ties go to the estimate. Exact metrics carry no stderr. A newer
 * estimate with no metrics yet (a stream that just started) wins over an older block.
 * @returns {{source: "stream"|"exact", v, w, space, probes, done, metrics, history?}|null}
 */
export function metricsSource(estimate, block) {
  // A streaming job publishes its estimate (empty metrics) as it starts: show that pair.
  const estOk = nonEmpty(estimate) && estimate.metrics !== null && typeof estimate.metrics === "object";
  const blkOk = nonEmpty(block) && nonEmpty(block.metrics);
  const job = (x) => (typeof x.job === "number" ? x.job : -1);
  if (estOk && (!blkOk || job(estimate) >= job(block)) && (nonEmpty(estimate.metrics) || !blkOk || job(estimate) > job(block))) {
    return { source: "stream", ...estimate };
  }
  if (blkOk) {
    const metrics = {};
    for (const [k, v] of Object.entries(block.metrics)) {
      metrics[k] = { value: v !== null && typeof v === "object" ? v.value : v, stderr: null };
    }
    return { source: "exact", v: block.v, w: block.w, space: block.space, probes: 0, done: true, metrics };
  }
  return null;
}

/** The pair a panel shows, "H[v, w] (space)". */
export function pairText(v, w, space) {
  return `H[${v}, ${w ?? v}]${space ? ` (${space})` : ""}`;
}

/**
 * Is a panel's pair the current pick? `shown` = {v, w, space} of the block / metrics, or for
 * the spectrum {node, group}. The current pick is the `selection` trait: a panel whose pair
 * differs (another pair, another space, or a pick in progress) is from an earlier pick.
 * A spectrum asked for by group (node null) is current unless another pair is picked.
 */
export function isCurrent(shown, sel) {
  if (!shown) return false;
  const s = { ...DEFAULT_SELECTION, ...(sel || {}) };
  if ("group" in shown && !("v" in shown)) {
    const target = shown.node ?? shown.group;
    if (shown.node == null && s.v == null) return true;
    return s.v === target && (s.w ?? null) === target;
  }
  const space = shown.space || "activation";
  return s.v === shown.v && (s.w ?? null) === (shown.w ?? null) && s.space === space;
}

/**
 * A streamed diagonal pick in parameter space and the local spectrum of that same group are
 * one matrix: once the spectrum has λmax and λmin, ‖H‖₂ = max(|λmax|, |λmin|) (with its
 * Lanczos bound; exact when dense) replaces the streamed Krylov value, and the stable rank
 * D = R² / ‖H‖₂² follows it, so the cards never contradict the spectrum panel.
 * Returns `source` (metricsSource's result) with those two metrics replaced, or unchanged.
 */
export function withSpectrum(source, sp) {
  if (!source || source.source !== "stream" || source.space !== "parameter" || source.v !== source.w) return source;
  if (!sp || sp.pending || (sp.part && sp.part !== "full") || (sp.group ?? null) !== source.v) return source;
  const st = sp.stats || {};
  const num = (x) => (typeof x === "number" && Number.isFinite(x) ? x : null);
  const hi = num(st.lambda_max);
  const lo = num(st.lambda_min);
  if (hi === null || lo === null) return source;
  const err = sp.errors || {};
  const top = Math.abs(hi) >= Math.abs(lo);
  const sigma = top ? Math.abs(hi) : Math.abs(lo);
  const sErr = num(top ? err.lambda_max : err.lambda_min) ?? 0;
  const how = sp.stage === "exact" || sp.method === "exact" ? "exact eigenvalues" : `Lanczos${sp.converged ? ", converged" : ""}`;
  const metrics = { ...source.metrics };
  metrics.spectral_norm = { value: sigma, stderr: sErr, source: "spectrum", from: `From the local spectrum of ${sp.group} (${how}): max(|λmax|, |λmin|).` };
  const R = source.metrics.resonance;
  const r = R && num(R.value);
  if (r !== null && sigma > 0) {
    const D = (r * r) / (sigma * sigma);
    const rel = Math.hypot(2 * (num(R.stderr) ?? 0) / r, 2 * sErr / sigma);
    metrics.stable_rank = { value: D, stderr: D * rel, source: "spectrum", from: `R² / ‖H‖₂² with ‖H‖₂ from the local spectrum of ${sp.group}.` };
  }
  return { ...source, metrics };
}

/** The kernel's input limits (graph.limits from Python; these defaults match protocol v1). */
export const DEFAULT_LIMITS = { probes: [1, 1_000_000], rel_ci: [0, 1] };

/**
 * Check the probe budget typed in the page. Returns {ok: true, value} or {ok: false, error}.
 * `limits.probes` = [min, max] (the kernel's).
 */
export function checkProbes(raw, limits = DEFAULT_LIMITS) {
  const [lo, hi] = (limits && limits.probes) || DEFAULT_LIMITS.probes;
  const text = String(raw ?? "").trim().replace(/[\s,_]/g, "");
  const fmt = (n) => n.toLocaleString("en-US");
  if (text === "") return { ok: false, error: `Probes: type a whole number from ${fmt(lo)} to ${fmt(hi)}.` };
  const v = Number(text);
  if (!Number.isFinite(v)) return { ok: false, error: `Probes: "${String(raw).slice(0, 20)}" is not a number; type a whole number from ${fmt(lo)} to ${fmt(hi)}.` };
  if (!Number.isInteger(v)) return { ok: false, error: `Probes: a whole number of probes, not ${v}.` };
  if (v < lo) return { ok: false, error: `Probes: at least ${fmt(lo)} (a stream needs probes to estimate anything).` };
  if (v > hi) return { ok: false, error: `Probes: at most ${fmt(hi)}, the kernel's limit (got ${fmt(v)}); use the target CI to stop early.` };
  return { ok: true, value: v };
}

/**
 * Check the target CI typed in percent. Empty = off. Returns {ok, value: fraction|null} or
 * {ok: false, error}. The kernel takes a fraction in (0, 1], i.e. 0 < CI ≤ 100 %.
 */
export function checkRelCI(raw, limits = DEFAULT_LIMITS) {
  const [, hi] = (limits && limits.rel_ci) || DEFAULT_LIMITS.rel_ci;
  const text = String(raw ?? "").trim().replace(/%$/, "").trim();
  if (text === "") return { ok: true, value: null };
  const v = Number(text);
  const max = 100 * hi;
  if (!Number.isFinite(v)) return { ok: false, error: `Target CI: "${String(raw).slice(0, 20)}" is not a number; type a percentage, or leave it empty to use the whole budget.` };
  if (v <= 0) return { ok: false, error: "Target CI: a ±0 % interval is never reached; type a positive percentage, or leave it empty to use the whole budget." };
  if (v > max) return { ok: false, error: `Target CI: at most ${max} % (±${max} % of the value); got ${v} %.` };
  return { ok: true, value: v / 100 };
}
