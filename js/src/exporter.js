// Export: the graph as SVG and the panels (metrics, block heatmaps, coupling map) as one PNG,
// downloaded through blob links.

import { h, themeColors } from "./dom.js";
import { formatNumber } from "./codec.js";

/** Trigger a download of `blob` named `filename` (a temporary blob: link). */
export function download(root, blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, style: { display: "none" } });
  root.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** "‖H^{GN}‖_F" -> [{text: "‖H", kind: "n"}, {text: "GN", kind: "sup"}, ...] */
export function symbolParts(sym) {
  const out = [];
  const re = /([_^])(\{[^}]*\}|.)/g;
  let last = 0;
  let m;
  while ((m = re.exec(sym)) !== null) {
    if (m.index > last) out.push({ text: sym.slice(last, m.index), kind: "n" });
    out.push({ text: m[2].startsWith("{") ? m[2].slice(1, -1) : m[2], kind: m[1] === "_" ? "sub" : "sup" });
    last = re.lastIndex;
  }
  if (last < sym.length) out.push({ text: sym.slice(last), kind: "n" });
  return out;
}

function text(ctx, s, x, y, font, color, maxW) {
  ctx.font = font;
  ctx.fillStyle = color;
  ctx.fillText(s, x, y, maxW);
}

/**
 * Draw the panels into one canvas.
 * @param {{root, title: string, subtitle: string, metrics: Array<{name,label,text}>,
 *   block: object|null, mapCanvas: HTMLCanvasElement|null}} o
 */
export function panelsCanvas(o) {
  const t = themeColors(o.root);
  const W = 960;
  const pad = 20;
  const ui = (size, weight = 400) => `${weight} ${size}px ${t.font}`;
  const mono = (size, weight = 400) => `${weight} ${size}px ${t.mono}`;
  const metricRows = Math.ceil((o.metrics.length || 1) / 3);
  const imgSize = 270;
  const blockH = o.block ? 24 + imgSize + 48 : 0;
  const mapW = o.mapCanvas ? parseFloat(o.mapCanvas.style.width) || o.mapCanvas.width : 0;
  const mapH = o.mapCanvas ? parseFloat(o.mapCanvas.style.height) || o.mapCanvas.height : 0;
  const mapScale = mapW > W - 2 * pad ? (W - 2 * pad) / mapW : 1;
  const legendH = o.mapCanvas && o.mapLegend ? 22 + 16 * (o.mapLegend.notes || []).length : 0;
  const H = pad + 50 + 18 + metricRows * 22 + 16 + blockH + (o.mapCanvas ? 30 + mapH * mapScale + legendH : 0) + pad;
  const dpr = 2;
  const c = document.createElement("canvas");
  c.width = W * dpr;
  c.height = Math.ceil(H * dpr);
  const ctx = c.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.fillStyle = t.bg;
  ctx.fillRect(0, 0, W, H);
  ctx.textBaseline = "alphabetic";
  let y = pad + 18;
  text(ctx, o.title, pad, y, ui(17, 600), t.fg, W - 2 * pad);
  y += 20;
  text(ctx, o.subtitle, pad, y, ui(12), t.fg2, W - 2 * pad);
  y += 30;
  text(ctx, "Metrics", pad, y, ui(13, 600), t.fg);
  y += 20;
  const colW = (W - 2 * pad) / 3;
  if (!o.metrics.length) text(ctx, "no metrics yet", pad, y, ui(12), t.fg3);
  o.metrics.forEach((m, k) => {
    const cx = pad + (k % 3) * colW;
    const cy = y + Math.floor(k / 3) * 22;
    let x = cx;
    for (const part of symbolParts(m.name)) {
      const size = part.kind === "n" ? 12 : 9;
      ctx.font = ui(size, 600);
      ctx.fillStyle = t.fg;
      ctx.fillText(part.text, x, cy + (part.kind === "sub" ? 3 : part.kind === "sup" ? -5 : 0));
      x += ctx.measureText(part.text).width;
    }
    if (m.label) text(ctx, m.label, x + 5, cy, ui(11), t.fg2, cx + 150 - x);
    text(ctx, m.text, cx + 156, cy, mono(12), t.fg, colW - 160);
  });
  y += metricRows * 22 + 16;
  if (o.block) {
    const b = o.block;
    text(ctx, `Block H[${b.block.v}, ${b.block.w}]  (${b.shown[0]}×${b.shown[1]} shown)`, pad, y, ui(13, 600), t.fg);
    y += 12;
    const [r, cc] = b.shown;
    const cell = Math.min(imgSize / r, imgSize / cc);
    const iw = cc * cell;
    const ih = r * cell;
    ctx.imageSmoothingEnabled = false;
    b.images.forEach((im, k) => {
      const x = pad + k * (imgSize + 40);
      text(ctx, im.label, x, y + 10, ui(12, 600), t.fg2);
      ctx.drawImage(im.image, x, y + 16, iw, ih);
      ctx.strokeStyle = t.border2;
      ctx.lineWidth = 1;
      ctx.strokeRect(x + 0.5, y + 16.5, iw, ih);
    });
    y += 16 + imgSize + 18;
    // colour bar
    const bw = 200;
    for (let x = 0; x < bw; x++) {
      ctx.fillStyle = b.scale.css(((x + 0.5) / bw) * 2 * b.scale.vmax - b.scale.vmax);
      ctx.fillRect(pad + 70 + x, y - 9, 1, 10);
    }
    text(ctx, formatNumber(-b.scale.vmax, 3), pad, y, mono(11), t.fg2, 66);
    text(ctx, formatNumber(b.scale.vmax, 3), pad + 70 + bw + 6, y, mono(11), t.fg2);
    text(ctx, "one scale for Full / GN / Tensor", pad + 70 + bw + 80, y, ui(11), t.fg3);
    y += 18;
  }
  if (o.mapCanvas) {
    y += 8;
    text(ctx, "Coupling map", pad, y, ui(13, 600), t.fg);
    y += 10;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(o.mapCanvas, pad, y, mapW * mapScale, mapH * mapScale);
    y += mapH * mapScale + 18;
    const L = o.mapLegend;
    if (L) {
      // the map's legend: what is drawn, its colour bar with both ends, and the notes
      text(ctx, L.title, pad, y, ui(12, 600), t.fg);
      const x0 = pad + Math.min(420, ctx.measureText(L.title).width + 16);
      text(ctx, L.lo, x0, y, mono(11), t.fg2, 80);
      const bx = x0 + 8 + ctx.measureText(L.lo).width;
      for (let x = 0; x < 160; x++) {
        ctx.fillStyle = L.color((x + 0.5) / 160);
        ctx.fillRect(bx + x, y - 9, 1, 10);
      }
      text(ctx, L.hi, bx + 166, y, mono(11), t.fg2);
      (L.notes || []).forEach((line, i) => text(ctx, line, pad, y + 16 * (i + 1), ui(11), t.fg3, W - 2 * pad));
    }
  }
  return c;
}

export function canvasToBlob(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("PNG encoding failed"))), "image/png");
  });
}
