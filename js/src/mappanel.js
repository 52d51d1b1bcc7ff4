// Coupling-map panel: n×n heatmap of R (log scale) or C over node pairs, filled
// progressively from the `filled` mask, optional GN-Gap overlay; clicking a cell picks that pair.

import { h, add, clear, sizeCanvas, placeTooltip, themeColors } from "./dom.js";
import { decodeBuf, formatNumber } from "./codec.js";
import { makeSequential, symmetricVmax, rgbaCss, MISSING, paletteFor } from "./scale.js";

const DECADES = 4;

/** @param {{root: Element, onRequest(), onPick(v: string, w: string)}} opts */
export function createMapPanel(opts) {
  let which = "C";
  let overlay = false;
  let data = null; // {map, names, R, C, gap, filled, n}
  let selection = {};
  let running = false;
  let geom = null;
  let legendInfo = null;

  const segBtn = (key, title) => h("button", { type: "button", "aria-pressed": key === which ? "true" : "false", title, "data-hx-map-metric": key, onclick: () => { which = key; syncSeg(); render(); } }, key);
  const seg = h("div", { class: "hx-tabs", role: "group", "aria-label": "Map metric" },
    segBtn("R", "Resonance ‖H_vw‖_F (log scale)"), segBtn("C", "Coupling (linear scale)"));
  const syncSeg = () => seg.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", b.dataset.hxMapMetric === which ? "true" : "false"));
  const gapBox = h("input", { type: "checkbox", "data-hx-map-gap": "", onchange: (e) => { overlay = e.target.checked; render(); } });
  const reqBtn = h("button", { class: "hx-btn hx-small", type: "button", "data-hx-action": "map", title: "Compute R, C and GN-Gap for every pair of the visible nodes", onclick: () => opts.onRequest() }, "Compute map");
  const sub = h("span", { class: "hx-panel-sub" });
  const canvasWrap = h("div", { class: "hx-map" });
  const side = h("div", { class: "hx-map-side" });
  const tip = h("div", { class: "hx-tip", hidden: true, role: "tooltip" });
  const body = h("div", { class: "hx-panel-body hx-map-body" }, canvasWrap, side);
  const el = h("section", { class: "hx-panel hx-map-panel" },
    h("div", { class: "hx-panel-head" }, h("span", { class: "hx-panel-title" }, "Coupling map"), sub, h("span", { class: "hx-spacer" }),
      h("label", { class: "hx-check", title: "Dot size = gap / (1 + gap): none for pure Gauss–Newton, full cell when the tensor part dominates" }, gapBox, "GN-Gap overlay"),
      seg, reqBtn),
    body, tip);

  function decode(map) {
    const names = (map.names || []).map(String);
    const n = names.length;
    const get = (key) => {
      const d = map[key] ? decodeBuf(map[key]) : null;
      return d && d.array.length === n * n ? d.array : null;
    };
    const filled = get("filled");
    return { map, names, n, R: get("R"), C: get("C"), gap: get("gap"), D: get("D"), distance: get("distance"), filled };
  }

  function isFilled(k) {
    if (!data.filled) return true;
    return !!data.filled[k];
  }

  function render() {
    tip.hidden = true;
    clear(canvasWrap);
    clear(side);
    if (!data || data.n === 0) {
      sub.textContent = "";
      canvasWrap.append(h("div", { class: "hx-empty" }, "Couplings of every pair of visible nodes, computed on request."));
      geom = null;
      legendInfo = null;
      return;
    }
    const { names, n, map } = data;
    const values = which === "R" ? data.R : data.C;
    const done = data.filled ? data.filled.reduce((a, b) => a + (b ? 1 : 0), 0) : n * n;
    sub.textContent = `${n} nodes · ${map.space || ""} · ${done}/${n * n} pairs${map.done ? "" : " (running)"}`;
    const theme = themeColors(opts.root);
    const ctxM = document.createElement("canvas").getContext("2d");
    const font = `11px ${theme.mono}`;
    ctxM.font = font;
    const labelW = Math.min(150, Math.ceil(Math.max(...names.map((s) => ctxM.measureText(s).width))) + 8);
    const cell = Math.max(6, Math.min(24, Math.floor(380 / n)));
    const grid = cell * n;
    const W = labelW + grid + 2;
    const H = labelW + grid + 2;
    geom = { labelW, cell, n };
    const cv = h("canvas", { role: "img", "aria-label": `Coupling map (${which})`, "data-hx-map": which });
    const ctx = sizeCanvas(cv, W, H);
    ctx.font = font;
    ctx.fillStyle = theme.fg2;
    ctx.textBaseline = "middle";
    const fs = Math.min(11, cell - 1);
    if (fs >= 6) {
      ctx.font = `${fs}px ${theme.mono}`;
      ctx.textAlign = "right";
      names.forEach((s, i) => ctx.fillText(s, labelW - 4, labelW + i * cell + cell / 2, labelW - 6));
      ctx.save();
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      names.forEach((s, j) => ctx.fillText(s, -labelW + 4, labelW + j * cell + cell / 2, labelW - 6));
      ctx.restore();
    }
    const vmax = which === "R" ? symmetricVmax(values || []) : Math.max(1, symmetricVmax(values || []));
    const pal = paletteFor(theme.bg);
    const scale = makeSequential({ vmax, log: which === "R", decades: DECADES, color: pal.seq, floor: pal.floor });
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const k = i * n + j;
        const x = labelW + j * cell;
        const y = labelW + i * cell;
        let c = MISSING;
        if (isFilled(k) && values) c = scale.rgba(values[k]) || MISSING;
        ctx.fillStyle = rgbaCss(c);
        ctx.fillRect(x + 0.5, y + 0.5, cell - 1, cell - 1);
        if (overlay && isFilled(k) && data.gap && Number.isFinite(data.gap[k]) && data.gap[k] > 0) {
          const g = data.gap[k];
          const rad = (0.44 * cell * g) / (1 + g);
          if (rad >= 0.6) {
            ctx.fillStyle = theme.fg;
            ctx.globalAlpha = 0.75;
            ctx.beginPath();
            ctx.arc(x + cell / 2, y + cell / 2, rad, 0, 2 * Math.PI);
            ctx.fill();
            ctx.globalAlpha = 1;
          }
        }
      }
    }
    ctx.strokeStyle = theme.border;
    ctx.lineWidth = 1;
    ctx.strokeRect(labelW + 0.5, labelW + 0.5, grid, grid);
    const vi = names.indexOf(String(selection.v));
    const wi = names.indexOf(String(selection.w));
    if (vi >= 0 && wi >= 0) {
      ctx.strokeStyle = theme.v;
      ctx.lineWidth = 2;
      ctx.strokeRect(labelW + wi * cell + 1, labelW + vi * cell + 1, cell - 2, cell - 2);
    }
    cv.addEventListener("mousemove", (e) => {
      const hit = cellAt(cv, e);
      cv.style.cursor = hit ? "pointer" : "default";
      if (!hit) { tip.hidden = true; return; }
      showTip(hit.i, hit.j, e.clientX, e.clientY);
    });
    cv.addEventListener("mouseleave", () => { tip.hidden = true; });
    cv.addEventListener("click", (e) => {
      const hit = cellAt(cv, e);
      if (hit) opts.onPick(names[hit.i], names[hit.j], !running);
    });
    canvasWrap.append(cv);

    // side: legend and explanation
    const bar = document.createElement("canvas");
    const bctx = sizeCanvas(bar, 150, 10);
    for (let x = 0; x < 150; x++) {
      const t = (x + 0.5) / 150;
      const v = which === "R" ? vmax * Math.pow(10, -DECADES * (1 - t)) : t * vmax;
      bctx.fillStyle = scale.css(v);
      bctx.fillRect(x, 0, 1, 10);
    }
    const lo = which === "R" ? formatNumber(vmax * Math.pow(10, -DECADES), 2) : "0";
    const notes = [];
    if (overlay) notes.push("● GN-Gap: dot size gap/(1+gap); no dot = pure Gauss–Newton");
    if (done < n * n) notes.push(`Grey cells are not computed yet (${done}/${n * n} pairs).`);
    notes.push("Rows v, columns w.");
    legendInfo = {
      title: which === "R" ? "Resonance R = ‖H_vw‖_F (log scale)" : "Coupling C = ‖H_vw‖_F / √(‖H_vv‖_F ‖H_ww‖_F)",
      lo, hi: formatNumber(vmax, 3), notes,
      color: (t) => scale.css(which === "R" ? vmax * Math.pow(10, -DECADES * (1 - t)) : t * vmax),
    };
    add(side,
      h("div", {}, which === "R" ? "Resonance R = ‖H_vw‖_F, log scale" : "Coupling C = ‖H_vw‖_F / √(‖H_vv‖_F ‖H_ww‖_F)"),
      h("div", { class: "hx-legend" }, h("span", {}, lo), bar, h("span", {}, formatNumber(vmax, 3))),
      overlay ? h("div", { class: "hx-muted" }, "● GN-Gap: dot size gap/(1+gap); no dot = pure Gauss–Newton") : null,
      done < n * n ? h("div", { class: "hx-muted", "data-hx-map-pending": "" }, `Grey cells are not computed yet (${done}/${n * n} pairs).`) : null,
      h("div", { class: "hx-muted" }, "Click a cell to pick that pair (rows v, columns w)."));
  }

  function cellAt(cv, e) {
    if (!geom) return null;
    const r = cv.getBoundingClientRect();
    const x = e.clientX - r.left - geom.labelW;
    const y = e.clientY - r.top - geom.labelW;
    const j = Math.floor(x / geom.cell);
    const i = Math.floor(y / geom.cell);
    if (x < 0 || y < 0 || i >= geom.n || j >= geom.n) return null;
    return { i, j };
  }

  function showTip(i, j, cx, cy) {
    const k = i * data.n + j;
    const f = isFilled(k);
    const row = (name, arr) => (arr ? h("tr", {}, h("td", {}, name), h("td", {}, f ? formatNumber(arr[k], 4) : "…")) : null);
    add(clear(tip),
      h("div", { class: "hx-tip-title" }, `${data.names[i]} × ${data.names[j]}`),
      h("table", {}, h("tbody", {}, row("R", data.R), row("C", data.C), row("GN-Gap", data.gap), row("D", data.D),
        data.distance ? h("tr", {}, h("td", {}, "hops"), h("td", {}, data.distance[k] >= 0 ? String(data.distance[k]) : "unreachable")) : null)),
      f ? null : h("div", { class: "hx-tip-note" }, "not computed yet"));
    tip.hidden = false;
    placeTooltip(tip, el, cx, cy);
  }

  return {
    el,
    setMap(map) {
      if (!map || !Array.isArray(map.names)) { data = null; render(); return; }
      try { data = decode(map); } catch (err) {
        data = null;
        clear(canvasWrap).append(h("div", { class: "hx-empty" }, `Could not decode the map: ${err.message}`));
        return;
      }
      render();
    },
    setSelection(sel) { selection = sel || {}; if (data) render(); },
    setRunning(r) { running = !!r; },
    /** The current map canvas (for the PNG export) or null. */
    canvas() { return canvasWrap.querySelector("canvas"); },
    /** The legend of the drawn map for the PNG export ({title, lo, hi, color(t), notes}) or null. */
    legend() { return canvasWrap.querySelector("canvas") ? legendInfo : null; },
  };
}
