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
