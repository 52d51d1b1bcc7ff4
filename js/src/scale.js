// Colour scales shared by the heatmaps. Pure: no DOM.
//
// Works in light and dark themes by encoding magnitude as *opacity* of a
// mid-lightness hue over the panel background: 0 is the background itself, and
// larger |x| moves away from the background in either theme. Use `blend` to get
// opaque colours over a known background (PNG export, legends).

export const POS = [214, 64, 52]; // positive entries: red
export const NEG = [38, 120, 205]; // negative entries: blue
export const SEQ = [112, 72, 196]; // non-negative maps (R, C): violet
export const MISSING = [128, 128, 128, 56]; // NaN / not yet filled

/**
 * Hues per background: lighter tints on dark backgrounds keep mid values visible, and a higher
 * opacity floor there (`floor`) keeps small entries from sinking into the dark panel.
 */
export const PALETTES = {
  light: { pos: POS, neg: NEG, seq: SEQ, floor: 0.06 },
  dark: { pos: [255, 120, 104], neg: [96, 176, 255], seq: [196, 164, 255], floor: 0.2 },
};

/** The palette for a background colour (rgb array or CSS string); light when unknown. */
export function paletteFor(bg) {
  const rgb = typeof bg === "string" ? parseColor(bg) : bg;
  return rgb && isDark(rgb) ? PALETTES.dark : PALETTES.light;
}

/** Shared symmetric vmax over numbers and/or arrays (largest finite |x|; 0 when none). */
export function symmetricVmax(...items) {
  let m = 0;
  for (const it of items) {
    if (it == null) continue;
    if (typeof it === "number") {
      const v = Math.abs(it);
      if (Number.isFinite(v) && v > m) m = v;
      continue;
    }
    for (let i = 0; i < it.length; i++) {
      const v = Math.abs(it[i]);
      if (v > m && Number.isFinite(v)) m = v;
    }
  }
  return m;
}

function clamp01(t) {
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

/**
 * Diverging scale symmetric around 0.
 * @param {{vmax: number, gamma?: number, pos?: number[], neg?: number[]}} o
 *   gamma < 1 brightens small entries (t = (|x|/vmax)^gamma).
 * @returns {{vmax, gamma, rgba(x): number[]|null, css(x): string, t(x): number}}
 *   rgba: [r, g, b, a] with a in 0..255 (null for NaN/null); t: signed position in [-1, 1].
 */
export function makeDiverging({ vmax, gamma = 1, pos = POS, neg = NEG } = {}) {
  const vm = Number.isFinite(vmax) && vmax > 0 ? vmax : 1;
  const t = (x) => {
    if (x === null || x === undefined || Number.isNaN(x)) return NaN;
    const u = clamp01(Math.abs(x) / vm);
    const s = gamma === 1 ? u : Math.pow(u, gamma);
    return x < 0 ? -s : s;
  };
  const rgba = (x) => {
    const s = t(x);
    if (Number.isNaN(s)) return null;
    const c = s < 0 ? neg : pos;
    // A touch of opacity floor for tiny non-zeros keeps sign readable; 0 stays transparent.
    const a = s === 0 ? 0 : Math.round(255 * (0.04 + 0.96 * Math.abs(s)));
    return [c[0], c[1], c[2], a];
  };
  return { vmax: vm, gamma, t, rgba, css: (x) => rgbaCss(rgba(x)) };
}

/**
 * Sequential scale for non-negative values (coupling maps).
 * @param {{vmax: number, log?: boolean, decades?: number, color?: number[]}} o
 *   log: map log10(x/vmax) over `decades` decades below vmax to [0, 1].
 */
export function makeSequential({ vmax, log = false, decades = 4, color = SEQ, floor = 0.06 } = {}) {
  const vm = Number.isFinite(vmax) && vmax > 0 ? vmax : 1;
  const t = (x) => {
    if (x === null || x === undefined || Number.isNaN(x)) return NaN;
    if (x <= 0) return 0;
    if (log) return clamp01(1 + Math.log10(x / vm) / decades);
    return clamp01(x / vm);
  };
  const rgba = (x) => {
    const s = t(x);
    if (Number.isNaN(s)) return null;
    return [color[0], color[1], color[2], Math.round(255 * (s === 0 ? 0 : floor + (1 - floor) * s))];
  };
  return { vmax: vm, log, decades, floor, t, rgba, css: (x) => rgbaCss(rgba(x)) };
}

/** CSS string of an rgba array (alpha 0..255); transparent for null. */
export function rgbaCss(c) {
  if (!c) return "transparent";
  return `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${Math.round((c[3] / 255) * 1000) / 1000})`;
}

/** Composite rgba (alpha 0..255) over an opaque background rgb. */
export function blend(c, bg) {
  if (!c) return bg.slice(0, 3);
  const a = c[3] / 255;
  return [0, 1, 2].map((k) => Math.round(c[k] * a + bg[k] * (1 - a)));
}

/**
 * Fill RGBA pixel data (Uint8ClampedArray, 4 bytes per value) from values through a scale.
 * `mask` (optional, same length, truthy = show) hides unfilled entries as MISSING.
 */
export function fillPixels(pixels, values, scale, mask = null) {
  for (let k = 0; k < values.length; k++) {
    const c = mask && !mask[k] ? MISSING : scale.rgba(values[k]) || MISSING;
    const o = 4 * k;
    pixels[o] = c[0]; pixels[o + 1] = c[1]; pixels[o + 2] = c[2]; pixels[o + 3] = c[3];
  }
  return pixels;
}

/** Parse "#rgb", "#rrggbb", "#rrggbbaa", "rgb(r, g, b)", "rgba(r, g, b, a)" -> [r, g, b, a 0..1] or null. */
export function parseColor(s) {
  if (typeof s !== "string") return null;
  const str = s.trim().toLowerCase();
  let m = /^#([0-9a-f]{3,8})$/.exec(str);
  if (m) {
    let h = m[1];
    if (h.length === 3 || h.length === 4) h = [...h].map((ch) => ch + ch).join("");
    if (h.length !== 6 && h.length !== 8) return null;
    const n = [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
    return [...n, h.length === 8 ? parseInt(h.slice(6, 8), 16) / 255 : 1];
  }
  m = /^rgba?\(([^)]+)\)$/.exec(str);
  if (m) {
    const raw = m[1].split(/[\s,/]+/).filter(Boolean);
    if (raw.length < 3) return null;
    const chan = raw.slice(0, 3).map((p) => (p.endsWith("%") ? (parseFloat(p) / 100) * 255 : parseFloat(p)));
    const a = raw.length > 3 ? (raw[3].endsWith("%") ? parseFloat(raw[3]) / 100 : parseFloat(raw[3])) : 1;
    if ([...chan, a].some((p) => Number.isNaN(p))) return null;
    return [...chan, a];
  }
  if (str === "white") return [255, 255, 255, 1];
  if (str === "black") return [0, 0, 0, 1];
  return null;
}

/** Relative luminance in [0, 1] of an rgb array (sRGB). */
export function luminance(rgb) {
  const lin = rgb.slice(0, 3).map((v) => {
    const c = v / 255;
    return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
}

export function isDark(rgb) {
  return luminance(rgb) < 0.35;
}

/** About n round tick values in [lo, hi]. */
export function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) return [lo];
  const span = hi - lo;
  const step0 = span / Math.max(1, n - 1);
  const p = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((k) => k * p).find((s) => s >= step0) || 10 * p;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}
