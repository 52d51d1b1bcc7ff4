// Local spectrum panel (P2): eigenvalue density of a parameter group's diagonal block and
// its statistics, from the `spectrum` trait. Hidden until a spectrum arrives.

import { h, add, clear, sizeCanvas, themeColors } from "./dom.js";
import { decodeBuf, formatNumber, formatInt, toNumber } from "./codec.js";
import { paletteFor, rgbaCss } from "./scale.js";

const STATS = [
  ["lambda_max", "λmax"], ["lambda_min", "λmin"], ["trace", "trace"], ["frobenius", "‖·‖F"],
  ["negative_fraction", "neg. fraction"], ["negative_mass", "neg. mass"], ["abs_min_over_max", "|λmin|/λmax"],
  ["condition_number", "cond. (pos.)"], ["spectral_entropy", "entropy"], ["effective_rank", "eff. rank"],
  ["stable_rank", "stable rank"], ["numerical_rank", "num. rank"], ["tol", "tolerance τ"], ["n", "n"],
];

/** Histogram of values over [lo, hi] in `bins` bins: {edges, counts}. */
export function histogram(values, bins = 48) {
  const v = Array.from(values).filter((x) => Number.isFinite(x));
  if (!v.length) return { edges: [0, 1], counts: [0] };
  let lo = Math.min(...v);
  let hi = Math.max(...v);
  if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  const counts = new Array(bins).fill(0);
  for (const x of v) counts[Math.min(bins - 1, Math.floor(((x - lo) / (hi - lo)) * bins))] += 1;
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + ((hi - lo) * i) / bins);
  return { edges, counts };
}

/** @param {{root: Element, onRequest(group: string)}} opts */
export function createSpectrumPanel(opts) {
  const sub = h("span", { class: "hx-panel-sub" });
  const body = h("div", { class: "hx-panel-body hx-spec-body" });
  const el = h("section", { class: "hx-panel hx-spectrum-panel", "data-hx-panel": "spectrum", hidden: true },
    h("div", { class: "hx-panel-head" }, h("span", { class: "hx-panel-title" }, "Local spectrum"), sub), body);

  function plot(sp) {
    const t = themeColors(opts.root);
    const pal = paletteFor(t.bg);
    const W = 420;
    const H = 130;
    const cv = h("canvas", { role: "img", "aria-label": "Eigenvalue density" });
    const ctx = sizeCanvas(cv, W, H);
    const padL = 6, padB = 18, padT = 6;
    const eig = sp.eigenvalues ? decodeBuf(sp.eigenvalues) : null;
    let xs, ys, lo, hi;
    if (eig && eig.array.length) {
      const hist = histogram(eig.array);
      lo = hist.edges[0]; hi = hist.edges[hist.edges.length - 1];
      xs = hist.edges; ys = hist.counts;
    } else if (sp.density && sp.density.grid && sp.density.density) {
      const g = decodeBuf(sp.density.grid).array;
      const d = decodeBuf(sp.density.density).array;
      lo = g[0]; hi = g[g.length - 1];
      xs = Array.from(g); ys = Array.from(d);
    } else return null;
    const ymax = Math.max(...ys.filter(Number.isFinite), 1e-300);
    const X = (x) => padL + ((x - lo) / (hi - lo || 1)) * (W - 2 * padL);
    const Y = (y) => H - padB - (y / ymax) * (H - padB - padT);
    if (xs.length === ys.length + 1) {
      for (let i = 0; i < ys.length; i++) {
        if (!ys[i]) continue;
        const mid = (xs[i] + xs[i + 1]) / 2;
        const c = mid < 0 ? pal.neg : pal.pos;
        ctx.fillStyle = rgbaCss([c[0], c[1], c[2], 200]);
        ctx.fillRect(X(xs[i]) + 0.5, Y(ys[i]), Math.max(1, X(xs[i + 1]) - X(xs[i]) - 1), H - padB - Y(ys[i]));
      }
    } else {
      ctx.strokeStyle = t.accent;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      xs.forEach((x, i) => (i ? ctx.lineTo(X(x), Y(ys[i])) : ctx.moveTo(X(x), Y(ys[i]))));
      ctx.stroke();
    }
    ctx.strokeStyle = t.border;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(padL, H - padB + 0.5); ctx.lineTo(W - padL, H - padB + 0.5);
    if (lo < 0 && hi > 0) { ctx.moveTo(X(0) + 0.5, padT); ctx.lineTo(X(0) + 0.5, H - padB); }
    ctx.stroke();
    ctx.fillStyle = t.fg2;
    ctx.font = `11px ${t.mono}`;
    ctx.textBaseline = "alphabetic";
    ctx.textAlign = "left";
    ctx.fillText(formatNumber(lo, 3), padL, H - 4);
    ctx.textAlign = "right";
    ctx.fillText(formatNumber(hi, 3), W - padL, H - 4);
    if (lo < 0 && hi > 0 && X(0) - padL > 48 && W - padL - X(0) > 48) { ctx.textAlign = "center"; ctx.fillText("0", X(0), H - 4); }
    return cv;
  }

  function render(sp) {
    clear(body);
    if (!sp || (!sp.eigenvalues && !sp.density && !sp.stats)) { el.hidden = true; return; }
    el.hidden = false;
    const stats = sp.stats || {};
    sub.textContent = [sp.group, sp.method, toNumber(stats.n) !== null ? `${formatInt(stats.n)} parameters` : ""].filter(Boolean).join(" · ");
    let cv = null;
    try { cv = plot(sp); } catch (err) { cv = h("div", { class: "hx-empty" }, `Could not decode the spectrum: ${err.message}`); }
    const rows = STATS.filter(([k]) => k in stats).map(([k, label]) => h("tr", { "data-hx-stat": k },
      h("td", {}, label), h("td", {}, k === "n" || k === "numerical_rank" ? formatInt(stats[k]) : formatNumber(stats[k], 4))));
    const top = Array.isArray(stats.top_k) && stats.top_k.length
      ? h("div", { class: "hx-note" }, "top: ", h("span", { class: "hx-mono" }, stats.top_k.map((x) => formatNumber(x, 3)).join(", ")))
      : null;
    add(body,
      h("div", { class: "hx-spec-plot" }, cv, h("div", { class: "hx-note" }, sp.eigenvalues ? "eigenvalue histogram (red > 0, blue < 0)" : "eigenvalue density (SLQ)")),
      h("div", { class: "hx-spec-stats" }, h("table", { class: "hx-stats" }, h("tbody", {}, rows)), top));
  }

  return { el, setSpectrum: render };
}
