// Block heatmap panel: tabs Full / GN / Tensor on one shared diverging scale,
// hover tooltip with the entry and its (i, j), eigenvalue strip for diagonal blocks.

import { h, add, clear, staleBanner, sizeCanvas, placeTooltip, themeColors } from "./dom.js";
import { decodeBuf, downsample, binRange, formatNumber, formatInt } from "./codec.js";
import { makeDiverging, symmetricVmax, fillPixels, paletteFor } from "./scale.js";

export const PARTS = [
  { key: "full", label: "Full", title: "H = H^GN + H^T" },
  { key: "gn", label: "GN", title: "Gauss–Newton part H^GN" },
  { key: "tensor", label: "Tensor", title: "Tensor part H^T = H − H^GN" },
];
const MAX_CELLS = 360; // finer grids are binned (max |x| per bin) before drawing

/** Draw a matrix through a scale onto an offscreen canvas of one pixel per entry. */
export function matrixImage(values, rows, cols, scale, mask = null) {
  const off = document.createElement("canvas");
  off.width = Math.max(1, cols);
  off.height = Math.max(1, rows);
  const ctx = off.getContext("2d");
  const img = ctx.createImageData(off.width, off.height);
  fillPixels(img.data, values, scale, mask);
  ctx.putImageData(img, 0, 0);
  return off;
}

/** A horizontal colour bar canvas for a diverging scale. */
export function colorBar(scale, width = 150, height = 10) {
  const c = document.createElement("canvas");
  const ctx = sizeCanvas(c, width, height);
  for (let x = 0; x < width; x++) {
    const v = ((x + 0.5) / width) * 2 * scale.vmax - scale.vmax;
    ctx.fillStyle = scale.css(v);
    ctx.fillRect(x, 0, 1, height);
  }
  return c;
}

/** @param {{root: Element, onSpectrum(group: string)}} opts */
export function createBlockPanel(opts) {
  let tab = "full";
  let state = null; // {block, parts: {key: {array, shape}}, shown: [r, c], scale, eig}
  let selection = {};
  const tabs = h("div", { class: "hx-tabs", role: "tablist", "aria-label": "Block part" });
  const tabBtns = new Map();
  for (const p of PARTS) {
    const b = h("button", { type: "button", role: "tab", "aria-selected": p.key === tab ? "true" : "false", title: p.title, "data-hx-tab": p.key, onclick: () => setTab(p.key) }, p.label);
    tabBtns.set(p.key, b);
    tabs.append(b);
  }
  const subPair = h("span", { class: "hx-sub-shrink" });
  const subShape = h("span", { class: "hx-sub-keep", "data-hx-block-shape": "" });
  const sub = h("span", { class: "hx-panel-sub hx-sub-split" }, subPair, subShape);
  const body = h("div", { class: "hx-panel-body" });
  const tip = h("div", { class: "hx-tip", hidden: true, role: "tooltip" });
  const stale = staleBanner();
  const el = h("section", { class: "hx-panel hx-block-panel", "data-hx-panel": "block" },
    h("div", { class: "hx-panel-head" }, h("span", { class: "hx-panel-title" }, "Block"), sub, tabs), stale.el, body, tip);

  function setTab(key) {
    tab = key;
    for (const [k, b] of tabBtns) b.setAttribute("aria-selected", k === key ? "true" : "false");
    render();
  }

  function empty(msg) {
    clear(body).append(h("div", { class: "hx-empty" }, msg));
    subPair.textContent = "";
    subShape.textContent = "";
    sub.title = "";
  }

  function decode(block) {
    const parts = {};
    let shown = null;
    for (const p of PARTS) {
      const d = block.parts && block.parts[p.key] ? decodeBuf(block.parts[p.key]) : null;
      if (!d) continue;
      let shape = d.shape.length === 2 ? d.shape : [1, d.array.length];
      let array = d.array;
      if (shape[0] > MAX_CELLS || shape[1] > MAX_CELLS) {
        const ds = downsample(array, shape, MAX_CELLS, MAX_CELLS, "absmax");
        array = ds.array;
        shape = ds.shape;
      }
      parts[p.key] = { array, shape };
      shown = shown || shape;
    }
    const vmaxIn = Number(block.vmax);
    const vmax = Number.isFinite(vmaxIn) && vmaxIn > 0 ? vmaxIn : symmetricVmax(...Object.values(parts).map((x) => x.array));
    const eig = block.eigenvalues ? decodeBuf(block.eigenvalues) : null;
    const pal = paletteFor(themeColors(opts.root).bg);
    return { block, parts, shown, scale: makeDiverging({ vmax, pos: pal.pos, neg: pal.neg }), eig };
  }

  function render() {
    tip.hidden = true;
    if (!state) { empty("The dense block H[v, w] appears here after an exact computation."); return; }
    const { block, parts, shown, scale, eig } = state;
    for (const [k, b] of tabBtns) b.disabled = !parts[k];
    if (!parts[tab]) {
      const first = PARTS.find((p) => parts[p.key]);
      if (!first) { empty("This block carries no matrix."); return; }
      tab = first.key;
      for (const [k, b] of tabBtns) b.setAttribute("aria-selected", k === tab ? "true" : "false");
    }
    const [dv, dw] = Array.isArray(block.shape) ? block.shape : shown;
    const [r, c] = shown;
    const diag = block.v != null && block.v === block.w;
    const binned = block.downsampled || r < dv || c < dw;
    // the shape never shrinks; long names do (full text in the tooltip)
    subPair.textContent = `H[${block.v}, ${block.w}]`;
    subShape.textContent = ` · ${formatInt(dv)}×${formatInt(dw)}`;
    subShape.setAttribute("data-hx-block-shape", `${dv}x${dw}`);
    sub.title = `H[${block.v}, ${block.w}] · ${formatInt(dv)}×${formatInt(dw)}${binned ? ` (shown ${r}×${c})` : ""}`;

    const avail = Math.max(120, (body.clientWidth || 372) - 36);
    const maxH = 250;
    const cell = Math.max(0.25, Math.min(avail / c, maxH / r, 22));
    const W = Math.max(1, Math.round(cell * c));
    const H = Math.max(1, Math.round(cell * r));
    const canvas = h("canvas", { "data-hx-heatmap": tab, "aria-label": `Heatmap of the ${tab} part of H[${block.v}, ${block.w}]`, role: "img" });
    const ctx = sizeCanvas(canvas, W, H);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(matrixImage(parts[tab].array, r, c, scale), 0, 0, W, H);
    if (cell >= 7) {
      // faint grid for small blocks so single entries read as cells
      ctx.strokeStyle = themeColors(opts.root).border2;
      ctx.globalAlpha = 0.6;
      ctx.lineWidth = 0.5;
      ctx.beginPath();
      for (let i = 1; i < r; i++) { ctx.moveTo(0, i * cell); ctx.lineTo(W, i * cell); }
      for (let j = 1; j < c; j++) { ctx.moveTo(j * cell, 0); ctx.lineTo(j * cell, H); }
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    canvas.addEventListener("mousemove", (e) => {
      const rect = canvas.getBoundingClientRect();
      const j = Math.floor(((e.clientX - rect.left) / rect.width) * c);
      const i = Math.floor(((e.clientY - rect.top) / rect.height) * r);
      if (i < 0 || j < 0 || i >= r || j >= c) { tip.hidden = true; return; }
      showTip(i, j, e.clientX, e.clientY);
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });

    const top = h("div", { class: "hx-heat-top", title: `columns: w = ${block.w}` }, `w = ${block.w} → j`);
    const left = h("div", { class: "hx-heat-left", title: `rows: v = ${block.v}` }, `v = ${block.v} → i`);
    const heat = h("div", { class: "hx-heat" }, top, left, h("div", { class: "hx-heat-canvas-wrap" }, canvas));
    const legend = h("div", { class: "hx-legend" },
      h("span", {}, formatNumber(-scale.vmax, 3)), colorBar(scale, 140, 10), h("span", {}, formatNumber(scale.vmax, 3)),
      h("span", { class: "hx-legend-label", title: "One colour scale for Full, GN and Tensor" }, "shared scale"),
      binned ? h("span", { class: "hx-legend-label", title: `${formatInt(dv)}×${formatInt(dw)} entries binned for display (the Python object keeps them all)` }, `shown ${r}×${c}`) : null);
    clear(body).append(heat, legend);
    if (eig && eig.array.length) body.append(eigStrip(eig.array, avail + 20));
    const param = (block.space || selection.space) === "parameter";
    if (diag && param && opts.onSpectrum) {
      add(body, h("div", { class: "hx-note" },
        h("button", { class: "hx-btn hx-small", type: "button", "data-hx-action": "spectrum", onclick: () => opts.onSpectrum(block.v) }, "Local spectrum"),
        " of the parameter group ", h("span", { class: "hx-mono" }, String(block.v))));
    }
  }

  function showTip(i, j, cx, cy) {
    const { block, parts, shown } = state;
    const [r, c] = shown;
    const [dv, dw] = Array.isArray(block.shape) ? block.shape : shown;
    const ri = binRange(i, dv, r);
    const rj = binRange(j, dw, c);
    const idx = (a) => (a[1] - a[0] <= 1 ? String(a[0]) : `${a[0]}…${a[1] - 1}`);
    const binned = ri[1] - ri[0] > 1 || rj[1] - rj[0] > 1;
    const rows = PARTS.filter((p) => parts[p.key]).map((p) => h("tr", { class: p.key === tab ? "hx-cur" : null },
      h("td", {}, p.label), h("td", {}, formatNumber(parts[p.key].array[i * c + j], 4))));
    add(clear(tip),
      h("div", { class: "hx-tip-title" }, `(i, j) = (${idx(ri)}, ${idx(rj)})`),
      h("table", {}, h("tbody", {}, rows)),
      binned ? h("div", { class: "hx-tip-note" }, "binned: value of largest magnitude") : null);
    tip.hidden = false;
    placeTooltip(tip, el, cx, cy);
  }

  function eigStrip(values, width) {
    const finite = Array.from(values).filter((x) => Number.isFinite(x));
    const m = symmetricVmax(finite) || 1;
    const pal = paletteFor(themeColors(opts.root).bg);
    const sc = makeDiverging({ vmax: m, pos: pal.pos, neg: pal.neg });
    const wrap = h("div", { class: "hx-eig", "data-hx-eigenvalues": String(finite.length) });
    const lo = Math.min(...finite);
    const hi = Math.max(...finite);
    const neg = finite.filter((x) => x < -1e-7 * m).length;
    wrap.append(h("div", { class: "hx-eig-head" },
      h("span", {}, `eigenvalues (${finite.length})`),
      h("span", { class: "hx-mono" }, `λmin ${formatNumber(lo, 3)} · λmax ${formatNumber(hi, 3)} · ${neg} negative`)));
    const cv = h("canvas", { role: "img", "aria-label": "Eigenvalue strip" });
    const H = 22;
    const ctx = sizeCanvas(cv, width, H);
    const X = (x) => 4 + ((x + m) / (2 * m)) * (width - 8);
    ctx.strokeStyle = themeColors(opts.root).border;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(4, H / 2); ctx.lineTo(width - 4, H / 2);
    ctx.moveTo(X(0), 3); ctx.lineTo(X(0), H - 3);
    ctx.stroke();
    for (const x of finite) {
      const c = sc.rgba(x) || [128, 128, 128, 255];
      ctx.fillStyle = `rgba(${c[0]},${c[1]},${c[2]},${Math.max(0.55, c[3] / 255)})`;
      ctx.fillRect(Math.round(X(x)) - 1, 4, 2, H - 8);
    }
    wrap.append(cv);
    return wrap;
  }

  return {
    el,
    setBlock(block) {
      if (!block || !block.parts) { state = null; render(); return; }
      try {
        state = decode(block);
      } catch (err) {
        state = null;
        empty(`Could not decode the block: ${err.message}`);
        return;
      }
      render();
    },
    setSelection(sel) { selection = sel || {}; },
    /** Mark the shown block as the current pick or as one from an earlier pick (banner `text`). */
    setCurrent(current, text) { stale.set(el, current, text); },
    relayout() { if (state) render(); },
    /** Everything the PNG export needs: images of each part on the shared scale. */
    exportParts() {
      if (!state) return null;
      const { block, parts, shown, scale, eig } = state;
      const [r, c] = shown;
      const images = PARTS.filter((p) => parts[p.key]).map((p) => ({ label: p.label, image: matrixImage(parts[p.key].array, r, c, scale) }));
      return { block, images, scale, shown, eig: eig ? Array.from(eig.array) : null };
    },
  };
}
