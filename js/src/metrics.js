// Live metric cards (value ± stderr with a sparkline of the running estimate).

import { h, s, staleBanner } from "./dom.js";
import { valueErrCandidates, formatValueErr, metricEntry, toNumber, pow10 } from "./codec.js";

export const METRICS = [
  { name: "resonance", sym: "R", label: "resonance", title: "Resonance R = ‖H_vw‖_F" },
  { name: "coupling", sym: "C", label: "coupling", title: "Coupling C = ‖H_vw‖_F / √(‖H_vv‖_F ‖H_ww‖_F)" },
  { name: "stable_rank", sym: "D", label: "stable rank", title: "Stable rank D = ‖H‖_F² / ‖H‖₂²" },
  { name: "gn_gap", sym: "GN-Gap", label: "", title: "GN-Gap = ‖H^T‖_F / ‖H^GN‖_F (0 = pure Gauss–Newton)" },
  { name: "spectral_norm", sym: "‖H‖_2", label: "spectral", title: "Spectral norm ‖H_vw‖₂" },
  { name: "trace", sym: "tr H", label: "trace", title: "Trace of a diagonal block (diagonal blocks only)" },
  { name: "norm_full", sym: "‖H‖_F", label: "full", title: "Frobenius norm of the block" },
  { name: "norm_gn", sym: "‖H^{GN}‖_F", label: "GN part", title: "Frobenius norm of the Gauss–Newton part" },
  { name: "norm_tensor", sym: "‖H^T‖_F", label: "tensor part", title: "Frobenius norm of the tensor part H − H^GN" },
];

/** Nodes for a tiny TeX-like symbol: "‖H^{GN}‖_F" -> ‖H<sup>GN</sup>‖<sub>F</sub>. */
export function symbolNodes(sym) {
  const out = [];
  const re = /([_^])(\{[^}]*\}|.)/g;
  let last = 0;
  let m;
  while ((m = re.exec(sym)) !== null) {
    if (m.index > last) out.push(sym.slice(last, m.index));
    const body = m[2].startsWith("{") ? m[2].slice(1, -1) : m[2];
    out.push(h(m[1] === "_" ? "sub" : "sup", {}, body));
    last = re.lastIndex;
  }
  if (last < sym.length) out.push(sym.slice(last));
  return out;
}

/** Path data of a sparkline (line and ± stderr band) over history [[probes, value, stderr], ...]. */
export function sparkPaths(history, width = 100, height = 18, pad = 1.5) {
  const pts = (history || []).map((r) => [toNumber(r[0]), toNumber(r[1]), toNumber(r[2])]).filter((r) => r[0] !== null && r[1] !== null);
  if (pts.length < 2) return null;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [p, v, e] of pts) {
    const err = e !== null && Number.isFinite(e) ? e : 0;
    x0 = Math.min(x0, p); x1 = Math.max(x1, p);
    y0 = Math.min(y0, v - err); y1 = Math.max(y1, v + err);
  }
  if (!(x1 > x0)) x1 = x0 + 1;
  if (!(y1 > y0)) { y0 -= 1e-12 + Math.abs(y0) * 0.05; y1 += 1e-12 + Math.abs(y1) * 0.05; }
  const X = (p) => ((p - x0) / (x1 - x0)) * width;
  const Y = (v) => pad + (1 - (v - y0) / (y1 - y0)) * (height - 2 * pad);
  const f = (n) => n.toFixed(2);
  const line = "M" + pts.map(([p, v]) => `${f(X(p))},${f(Y(v))}`).join("L");
  const up = pts.map(([p, v, e]) => `${f(X(p))},${f(Y(v + (e || 0)))}`);
  const down = pts.slice().reverse().map(([p, v, e]) => `${f(X(p))},${f(Y(v - (e || 0)))}`);
  const band = "M" + up.join("L") + "L" + down.join("L") + "Z";
  return { line, band };
}

function card(def) {
  const value = h("span", { class: "hx-metric-v" }, "—");
  const err = h("span", { class: "hx-metric-err" });
  const exp = h("span", { class: "hx-metric-exp" });
  const band = s("path", { class: "hx-spark-band" });
  const line = s("path", { class: "hx-spark-line", "vector-effect": "non-scaling-stroke" });
  const spark = s("svg", { class: "hx-spark", viewBox: "0 0 100 18", preserveAspectRatio: "none", "aria-hidden": "true" }, band, line);
  const note = h("span", { class: "hx-metric-note", "data-hx-metric-note": "", hidden: true });
  const el = h("div", {
    class: "hx-metric hx-absent", "data-hx-metric": def.name, "data-hx-value": "", "data-hx-stderr": "", "data-hx-probes": "",
    title: def.title || def.name,
  },
  h("div", { class: "hx-metric-name" }, h("span", { class: "hx-metric-sym" }, symbolNodes(def.sym || def.name)), def.label ? h("span", {}, def.label) : null, note),
  h("div", { class: "hx-metric-value" }, value, err, exp),
  spark);
  return { el, row: el.querySelector(".hx-metric-value"), value, err, exp, band, line, def, forms: null, note };
}

function showParts(c, p, present) {
  c.value.textContent = present ? p.value : "—";
  c.err.textContent = present && p.err !== null ? ` ± ${p.err}` : "";
  c.exp.textContent = present && p.exp !== null ? pow10(p.exp) : "";
  if (present && p.exp !== null && p.err !== null) {
    c.value.textContent = "(" + p.value;
    c.err.textContent = ` ± ${p.err})`;
  }
}

/**
 * Show the first way of writing value ± stderr that fits the card (stderr to 2, then 1
 * significant digits; fixed or scientific); if none fits, the stderr wraps onto a second
 * line. Never an ellipsis. Unmeasurable (hidden) cards get the first form.
 */
function fitCard(c) {
  const forms = c.forms;
  if (!forms) return;
  const { parts, present } = forms;
  c.row.classList.remove("hx-wrap");
  const width = c.row.clientWidth;
  for (const p of parts) {
    showParts(c, p, present);
    if (!width || c.row.scrollWidth <= width + 0.5) return;
  }
  showParts(c, parts[0], present);
  c.row.classList.add("hx-wrap");
}

/** @returns {{el, update(data), clear()}} */
export function createMetricsPanel() {
  // the pair may shrink (full text in the tooltip); the space and the probe count never do
  const subPair = h("span", { class: "hx-sub-shrink" }, "pick two nodes");
  const subKeep = h("span", { class: "hx-sub-keep", "data-hx-metrics-count": "" });
  const sub = h("span", { class: "hx-panel-sub hx-sub-split" }, subPair, subKeep);
  const grid = h("div", { class: "hx-metrics" });
  const cards = new Map();
  for (const def of METRICS) {
    const c = card(def);
    cards.set(def.name, c);
    grid.append(c.el);
  }
  const stale = staleBanner();
  const el = h("section", { class: "hx-panel hx-metrics-panel", "data-hx-panel": "metrics" },
    h("div", { class: "hx-panel-head" }, h("span", { class: "hx-panel-title" }, "Metrics"), sub),
    stale.el, h("div", { class: "hx-panel-body" }, grid));
  // cards change width with the output area: pick the form that fits again
  let lastW = -1;
  const ro = typeof ResizeObserver === "function" ? new ResizeObserver(() => {
    const w = grid.clientWidth;
    if (w === lastW) return;
    lastW = w;
    for (const c of cards.values()) fitCard(c);
  }) : null;
  if (ro) ro.observe(grid);

  function setCard(c, entry, history, probes, exact, extra) {
    const { value, stderr } = metricEntry(entry);
    const present = entry !== undefined && entry !== null;
    const el = c.el;
    el.classList.toggle("hx-absent", !present);
    el.setAttribute("data-hx-value", present ? (value === null ? "NaN" : String(value)) : "");
    el.setAttribute("data-hx-stderr", present ? (exact ? "0" : stderr === null ? "" : String(stderr)) : "");
    el.setAttribute("data-hx-probes", present ? String(probes ?? "") : "");
    el.setAttribute("data-hx-source", present && entry && entry.source ? String(entry.source) : "");
    c.forms = { parts: valueErrCandidates(value, exact ? null : stderr), present };
    fitCard(c);
    // Stochastic noise explains itself instead of an unexplained colour (never clamped)
    const why = present ? metricNote(c.def.name, value, exact ? null : stderr) : null;
    c.note.hidden = !why;
    c.note.textContent = why ? why.tag : "";
    el.classList.toggle("hx-metric-warn", !!why);
    el.title = [c.def.title || c.def.name, present ? formatValueErr(value, exact ? null : stderr) : "",
      entry && entry.from ? entry.from : "", why ? why.text : "", extra || ""].filter(Boolean).join("\n");
    const paths = present && !exact ? sparkPaths(history) : null;
    c.band.setAttribute("d", paths ? paths.band : "");
    c.line.setAttribute("d", paths ? paths.line : "");
  }

  return {
    el,
    /**
     * @param {{source: "stream"|"exact", v, w, space, probes, done, metrics: object, history?: object}|null} d
     */
    update(d) {
      if (!d || !d.metrics) { this.clear(); return; }
      const exact = d.source === "exact";
      const probes = exact ? 0 : d.probes;
      // the grid stays 3×3: other metrics (trace_gn) are shown in the tooltip of their card
      const gn = metricEntry(d.metrics.trace_gn);
      const extra = { trace: d.metrics.trace_gn ? `GN part of the trace: ${formatValueErr(gn.value, exact ? null : gn.stderr)}` : "" };
      for (const c of cards.values()) setCard(c, d.metrics[c.def.name], d.history && d.history[c.def.name], probes, exact, extra[c.def.name]);
      const pair = d.v != null ? `H[${d.v}, ${d.w ?? d.v}]` : "";
      const p = toNumber(d.probes) ?? 0;
      const budget = toNumber(d.budget);
      const count = budget !== null && !d.done ? `${p}/${budget} probes` : `${p} probes`;
      subPair.textContent = pair;
      subKeep.textContent = [pair ? "" : null, d.space, exact ? "exact" : count].filter((x) => x !== null && x !== undefined).join(" · ");
      sub.title = [pair, d.space, exact ? "exact" : count].filter(Boolean).join(" · ");
    },
    clear() {
      for (const c of cards.values()) setCard(c, undefined, null, "", false, "");
      subPair.textContent = "pick two nodes";
      subKeep.textContent = "";
      sub.title = "";
    },
    /** Rows for the PNG export. */
    rows() {
      return [...cards.values()].filter((c) => !c.el.classList.contains("hx-absent")).map((c) => ({
        name: c.def.sym || c.def.name, label: c.def.label || "", text: c.el.title.split("\n")[1] || "—",
      }));
    },
    subtitle: () => sub.title,
    /** Mark the cards as the current pick's or an earlier one's (banner `text`). */
    setCurrent(current, text) { stale.set(el, current, text); },
    destroy() { if (ro) ro.disconnect(); },
  };
}

/**
 * Why a streamed value needs a word: a stable rank below 1 (impossible for the block itself:
 * probe noise), an error bar larger than the value, a coupling above 1 (tensor curvature or
 * noise). Returns {tag, text} or null.
 */
export function metricNote(name, value, stderr) {
  if (value === null || value === undefined) return null;
  const noisy = stderr !== null && stderr !== undefined && Number.isFinite(stderr) && stderr > Math.abs(value);
  if (name === "stable_rank" && value < 1) {
    return { tag: "noise", text: "Below 1: the stable rank of the block is ≥ 1, so this is probe noise — more probes bring it up." };
  }
  if (noisy) return { tag: "noisy", text: "The error bar is larger than the value: too few probes to tell — let it stream longer." };
  if (name === "coupling" && value > 1) {
    return { tag: "> 1", text: "Above 1: possible when the tensor part is large (never clamped), or from probe noise while streaming." };
  }
  return null;
}
