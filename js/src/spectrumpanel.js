// Local spectrum panel (P2): the spectrum of a parameter group's local Hessian from the
// `spectrum` trait, refined as snapshots stream in — exact eigenvalues (histogram), Lanczos
// extremes with their residual bounds (a strip that tightens), the SLQ density (a curve that
// smooths as probes accumulate) — with the stage, the progress and the statistics.
// Hidden until a spectrum (or a diagonal pick asking for one) arrives.

import { h, add, clear, sizeCanvas, themeColors, staleBanner } from "./dom.js";
import { decodeBuf, formatNumber, formatInt, formatValueErr, toNumber } from "./codec.js";
import { paletteFor, rgbaCss } from "./scale.js";

const STATS = [
  ["lambda_max", "λmax"], ["lambda_min", "λmin"], ["trace", "trace"], ["frobenius", "‖·‖F"],
  ["negative_fraction", "neg. fraction"], ["negative_mass", "neg. mass"], ["abs_min_over_max", "|λmin|/λmax"],
  ["condition_number", "cond. (pos.)"], ["spectral_entropy", "entropy"], ["effective_rank", "eff. rank"],
  ["stable_rank", "stable rank"], ["numerical_rank", "num. rank"], ["tol", "tolerance τ"], ["n", "n"],
];
const LABEL = Object.fromEntries(STATS);
const METHOD_TEXT = { exact: "exact", lanczos: "Lanczos", slq: "SLQ", "lanczos+slq": "Lanczos + SLQ", auto: "auto" };

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

function nums(list) {
  return Array.isArray(list) ? list.map(toNumber) : [];
}

/**
 * Lanczos extremes with their residual bounds: {top: [{value, bound}], bottom: [...]}
 * (top descending, bottom ascending; bound null when unknown).
 */
export function extremes(sp) {
  const pairs = (vals, bounds) => {
    const v = nums(vals);
    const b = nums(bounds);
    return v.map((value, i) => ({ value, bound: b[i] ?? null })).filter((x) => x.value !== null);
  };
  if (!sp) return { top: [], bottom: [] };
  return { top: pairs(sp.top, sp.top_bounds), bottom: pairs(sp.bottom, sp.bottom_bounds) };
}

/** Error bar of a statistic: Lanczos bounds for λmax / λmin, SLQ standard error for the trace. */
export function statError(sp, key) {
  const e = toNumber(sp && sp.errors ? sp.errors[key] : null);
  return e !== null && Number.isFinite(e) && e > 0 ? e : null;
}

/**
 * Where a (streaming) spectrum stands, for the panel's stage badge.
 * @param {object} sp the `spectrum` trait
 * @param {object} [st] the `status` trait (a cancelled / failed / superseded job stops it)
 * @returns {{key: "none"|"empty"|"pending"|"starting"|"exact"|"lanczos"|"slq"|"done"|"stopped",
 *   text: string, progress: number|null, done: boolean}}
 */
export function spectrumStage(sp, st) {
  if (!sp || typeof sp !== "object" || !Object.keys(sp).length) return { key: "none", text: "", progress: null, done: false };
  if ((sp.group === null || sp.group === undefined) && sp.message) return { key: "empty", text: "no parameters", progress: null, done: true };
  const job = toNumber(sp.job);
  const sjob = st ? toNumber(st.job) : null;
  const stoppedHere = st && sjob === job && (st.state === "cancelled" || st.state === "error");
  const superseded = sjob !== null && job !== null && sjob > job;
  if (sp.pending) {
    if (stoppedHere) return { key: "stopped", text: st.state === "cancelled" ? "cancelled before it started" : "not computed (error)", progress: null, done: false };
    if (superseded) return { key: "stopped", text: "not computed (a newer request came first)", progress: null, done: false };
    if (sp.stage === "starting") return { key: "starting", text: "starting …", progress: 0, done: false };
    return { key: "pending", text: "after the block", progress: null, done: false };
  }
  const budget = sp.budget || {};
  const it = toNumber(sp.lanczos_iterations) ?? 0;
  const itMax = toNumber(budget.lanczos_iterations);
  const probes = toNumber(sp.slq_probes) ?? 0;
  const probesMax = toNumber(budget.slq_probes);
  const lz = `Lanczos ${it}${itMax ? `/${itMax}` : ""} steps${sp.converged === true ? ", converged" : sp.converged === false && sp.done ? ", not converged" : ""}`;
  const slq = `SLQ ${probes}${probesMax ? `/${probesMax}` : ""} probes`;
  let text;
  if (sp.stage === "exact") text = `exact · all ${formatInt(sp.n ?? (sp.stats || {}).n)} eigenvalues`;
  else if (sp.stage === "lanczos") text = lz;
  else if (sp.stage === "slq") text = sp.method === "lanczos+slq" ? `${lz} · ${slq}` : slq;
  else text = sp.stage || "";
  const p = toNumber(sp.progress);
  if (stoppedHere && !sp.done) return { key: "stopped", text: `${st.state === "cancelled" ? "cancelled" : "stopped"} · ${text}`, progress: p, done: false };
  if (sp.done) return { key: "done", text, progress: 1, done: true };
  return { key: ["exact", "lanczos", "slq"].includes(sp.stage) ? sp.stage : "running", text, progress: p, done: false };
}

/** @param {{root: Element}} opts */
export function createSpectrumPanel(opts) {
  let sp = null;
  let status = null;
  const sub = h("span", { class: "hx-panel-sub" });
  const stageText = h("span", { class: "hx-spec-stage-text" });
  const bar = h("span", { class: "hx-spec-bar" });
  const stage = h("span", { class: "hx-spec-stage", "data-hx-spectrum-progress": "" }, stageText, h("span", { class: "hx-spec-track", "aria-hidden": "true" }, bar));
  const body = h("div", { class: "hx-panel-body hx-spec-body" });
  const stale = staleBanner();
  const el = h("section", { class: "hx-panel hx-spectrum-panel", "data-hx-panel": "spectrum", hidden: true },
    h("div", { class: "hx-panel-head" }, h("span", { class: "hx-panel-title" }, "Local spectrum"), sub, h("span", { class: "hx-spacer" }), stage),
    stale.el, body);

  const W = 420;

  function axis(ctx, t, lo, hi, H, padL, padB, padT, X) {
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
  }

  /** Ritz values as ticks on the axis, each with its ± residual bound as a whisker. */
  function ritzMarks(ctx, pal, ext, X, y, size) {
    for (const { value, bound } of [...ext.top, ...ext.bottom]) {
      const c = value < 0 ? pal.neg : pal.pos;
      ctx.strokeStyle = rgbaCss([c[0], c[1], c[2], 255]);
      ctx.fillStyle = rgbaCss([c[0], c[1], c[2], 230]);
      const x = X(value);
      if (bound !== null && bound > 0) {
        const a = X(value - bound);
        const b = X(value + bound);
        if (b - a > 1) {
          ctx.lineWidth = 1;
          ctx.beginPath();
          ctx.moveTo(a, y - size / 2); ctx.lineTo(a, y + size / 2);
          ctx.moveTo(a, y); ctx.lineTo(b, y);
          ctx.moveTo(b, y - size / 2); ctx.lineTo(b, y + size / 2);
          ctx.stroke();
        }
      }
      ctx.beginPath();
      ctx.moveTo(x, y - size); ctx.lineTo(x - size * 0.7, y + 1); ctx.lineTo(x + size * 0.7, y + 1);
      ctx.closePath();
      ctx.fill();
    }
  }

  function plot(s) {
    const t = themeColors(opts.root);
    const pal = paletteFor(t.bg);
    const padL = 6, padB = 18, padT = 6;
    const eig = s.eigenvalues ? decodeBuf(s.eigenvalues) : null;
    const ext = extremes(s);
    const hasDensity = s.density && s.density.grid && s.density.density;
    if (eig && eig.array.length) {
      const H = 130;
      const cv = h("canvas", { role: "img", "aria-label": "Eigenvalue histogram", "data-hx-spectrum-plot": "histogram" });
      const ctx = sizeCanvas(cv, W, H);
      const hist = histogram(eig.array);
      const lo = hist.edges[0];
      const hi = hist.edges[hist.edges.length - 1];
      const ymax = Math.max(...hist.counts, 1e-300);
      const X = (x) => padL + ((x - lo) / (hi - lo || 1)) * (W - 2 * padL);
      const Y = (y) => H - padB - (y / ymax) * (H - padB - padT);
      for (let i = 0; i < hist.counts.length; i++) {
        if (!hist.counts[i]) continue;
        const mid = (hist.edges[i] + hist.edges[i + 1]) / 2;
        const c = mid < 0 ? pal.neg : pal.pos;
        ctx.fillStyle = rgbaCss([c[0], c[1], c[2], 200]);
        ctx.fillRect(X(hist.edges[i]) + 0.5, Y(hist.counts[i]), Math.max(1, X(hist.edges[i + 1]) - X(hist.edges[i]) - 1), H - padB - Y(hist.counts[i]));
      }
      axis(ctx, t, lo, hi, H, padL, padB, padT, X);
      return { cv, caption: "eigenvalue histogram (red > 0, blue < 0)" };
    }
    if (hasDensity) {
      const H = 130;
      const g = decodeBuf(s.density.grid).array;
      const d = decodeBuf(s.density.density).array;
      if (!g.length || g.length !== d.length) return null;
      const lo = g[0];
      const hi = g[g.length - 1];
      const ymax = Math.max(...Array.from(d).filter(Number.isFinite), 1e-300);
      const X = (x) => padL + ((x - lo) / (hi - lo || 1)) * (W - 2 * padL);
      const Y = (y) => H - padB - (Math.max(0, y) / ymax) * (H - padB - padT - 4);
      const cv = h("canvas", { role: "img", "aria-label": "Eigenvalue density (SLQ)", "data-hx-spectrum-plot": "density" });
      const ctx = sizeCanvas(cv, W, H);
      ctx.beginPath();
      ctx.moveTo(X(g[0]), H - padB);
      for (let i = 0; i < g.length; i++) ctx.lineTo(X(g[i]), Y(d[i]));
      ctx.lineTo(X(g[g.length - 1]), H - padB);
      ctx.closePath();
      ctx.globalAlpha = 0.18;
      ctx.fillStyle = t.accent;
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.strokeStyle = t.accent;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      for (let i = 0; i < g.length; i++) (i ? ctx.lineTo(X(g[i]), Y(d[i])) : ctx.moveTo(X(g[i]), Y(d[i])));
      ctx.stroke();
      axis(ctx, t, lo, hi, H, padL, padB, padT, X);
      if (ext.top.length || ext.bottom.length) ritzMarks(ctx, pal, ext, X, H - padB - 1, 5);
      const sigma = toNumber(s.sigma);
      return {
        cv,
        caption: `eigenvalue density (SLQ${sigma !== null ? `, resolution σ = ${formatNumber(sigma, 2)}` : ""})${ext.top.length ? " · ▲ Lanczos extremes ± bounds" : ""}`,
      };
    }
    if (ext.top.length || ext.bottom.length) {
      const H = 64;
      const all = [...ext.top, ...ext.bottom];
      let lo = Math.min(...all.map((e) => e.value - (e.bound || 0)));
      let hi = Math.max(...all.map((e) => e.value + (e.bound || 0)));
      if (lo > 0) lo = Math.min(0, lo);
      if (hi < 0) hi = Math.max(0, hi);
      const pad = 0.04 * (hi - lo || 1);
      lo -= pad; hi += pad;
      const X = (x) => padL + ((x - lo) / (hi - lo || 1)) * (W - 2 * padL);
      const cv = h("canvas", { role: "img", "aria-label": "Lanczos Ritz values with residual bounds", "data-hx-spectrum-plot": "ritz" });
      const ctx = sizeCanvas(cv, W, H);
      axis(ctx, t, lo, hi, H, padL, padB, 4, X);
      ritzMarks(ctx, pal, ext, X, H - padB - 12, 7);
      return { cv, caption: "Lanczos Ritz values: top and bottom k with residual bounds (the bulk needs SLQ)" };
    }
    return null;
  }

  function statCell(s, key) {
    const stats = s.stats || {};
    const v = stats[key];
    const err = statError(s, key);
    const text = key === "n" || key === "numerical_rank" ? formatInt(v) : err !== null ? formatValueErr(v, err) : formatNumber(v, 4);
    const src = s.source && s.source[key] ? String(s.source[key]) : "";
    return h("tr", {
      "data-hx-stat": key, "data-hx-value": v === null || v === undefined ? "NaN" : String(v),
      "data-hx-err": err === null ? "" : String(err), title: src ? `${LABEL[key] || key}: from ${src}` : null,
    }, h("td", {}, LABEL[key] || key), h("td", {}, text));
  }

  function extremesBlock(s) {
    const ext = extremes(s);
    if (!ext.top.length && !ext.bottom.length) return null;
    const bounded = [...ext.top, ...ext.bottom].some((e) => e.bound !== null && e.bound > 0);
    if (!bounded && s.eigenvalues) {
      return h("div", { class: "hx-note" }, "top: ", h("span", { class: "hx-mono" }, ext.top.map((e) => formatNumber(e.value, 3)).join(", ")));
    }
    const line = (label, list, key) => h("div", { class: "hx-spec-ext", "data-hx-extremes": key },
      h("span", { class: "hx-spec-ext-k" }, label),
      h("span", { class: "hx-mono hx-spec-ext-v" }, list.map((e, i) => h("span", { class: "hx-nowrap" },
        e.bound !== null && e.bound > 0 ? formatValueErr(e.value, e.bound) : formatNumber(e.value, 4), i < list.length - 1 ? "," : ""))));
    return h("div", { class: "hx-spec-exts", title: "Ritz values; ± is the Lanczos residual bound (an eigenvalue lies within it)" },
      ext.top.length ? line(`top ${ext.top.length}`, ext.top, "top") : null,
      ext.bottom.length ? line(`bottom ${ext.bottom.length}`, ext.bottom, "bottom") : null);
  }

  function setStage(s) {
    const info = spectrumStage(s, status);
    el.setAttribute("data-hx-spectrum-stage", info.key);
    el.setAttribute("data-hx-spectrum-done", info.done ? "true" : "false");
    el.setAttribute("data-hx-spectrum-group", s && s.group ? String(s.group) : "");
    stageText.textContent = info.text;
    stage.title = info.text;
    stage.classList.toggle("hx-stopped", info.key === "stopped");
    stage.classList.toggle("hx-final", info.done);
    const p = info.progress;
    bar.parentElement.hidden = p === null || info.key === "empty";
    bar.style.width = `${Math.round(100 * Math.max(0, Math.min(1, p ?? 0)))}%`;
    stage.setAttribute("data-hx-spectrum-progress", p === null ? "" : String(p));
    return info;
  }

  function render() {
    const s = sp;
    clear(body);
    if (!s || typeof s !== "object" || !Object.keys(s).length) { el.hidden = true; setStage(null); return; }
    el.hidden = false;
    const info = setStage(s);
    const stats = s.stats || {};
    const n = toNumber(s.n ?? stats.n);
    if (info.key === "empty") {
      sub.textContent = s.node ? String(s.node) : "";
      body.append(h("div", { class: "hx-spec-msg", "data-hx-spectrum-empty": "" }, String(s.message)));
      return;
    }
    sub.textContent = [s.group, METHOD_TEXT[s.method] || s.method, n !== null ? `${formatInt(n)} parameters` : "",
      s.part && s.part !== "full" ? `${s.part} part` : ""].filter(Boolean).join(" · ");
    sub.title = sub.textContent;
    if (s.pending) {
      const msg = info.key === "stopped" ? `The local spectrum of ${s.group} was ${info.text}.`
        : s.stage === "starting" ? `Computing the local spectrum of ${s.group} …`
          : `The local spectrum of ${s.group} follows once the block H[${s.node}, ${s.node}] is done.`;
      body.append(h("div", { class: "hx-empty hx-spec-pending" }, msg));
      return;
    }
    let p = null;
    try { p = plot(s); } catch (err) { p = { cv: h("div", { class: "hx-empty" }, `Could not decode the spectrum: ${err.message}`), caption: "" }; }
    const shown = STATS.filter(([k]) => k in stats && (stats[k] !== null || k === "n"));
    const missing = STATS.filter(([k]) => k in stats && stats[k] === null).map(([, label]) => label);
    const rows = shown.map(([k]) => statCell(s, k));
    add(body,
      h("div", { class: "hx-spec-plot" },
        p ? p.cv : h("div", { class: "hx-empty" }, "No spectrum yet."),
        p && p.caption ? h("div", { class: "hx-note" }, p.caption) : null,
        extremesBlock(s)),
      h("div", { class: "hx-spec-stats" },
        h("table", { class: "hx-stats" }, h("tbody", {}, rows)),
        missing.length ? h("div", { class: "hx-note" }, `not estimated${s.done ? "" : " yet"}: ${missing.join(", ")}`) : null));
    if (s.note) body.append(h("div", { class: "hx-note hx-spec-note" }, String(s.note)));
  }

  return {
    el,
    setSpectrum(next) { sp = next; render(); },
    /** Mark the shown spectrum as the current pick's or an earlier one's (banner `text`). */
    setCurrent(current, text) { stale.set(el, current, text); },
    current: () => sp,
    /** The job status: a cancelled / failed / superseded job shows as stopped. */
    setStatus(st) {
      const before = spectrumStage(sp, status).key;
      status = st;
      if (sp && spectrumStage(sp, status).key !== before) render();
    },
  };
}
