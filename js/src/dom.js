// Tiny DOM helpers shared by the view modules.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  return el;
}

function append(el, children) {
  // null / undefined / false children are skipped (Element.append would print "null")
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return el;
}

/** Append children to el, skipping null / undefined / false. Returns el. */
export function add(el, ...children) {
  return append(el, children);
}

const FOCUSABLE = new Set(["button", "input", "select", "textarea", "a"]);

/**
 * Mark an element that can take focus so that notebook shortcuts do not fire while it has it.
 * Lumino (JupyterLab, Notebook 7) matches a shortcut's selector walking up from the focused
 * element and stops only at an element carrying `data-lm-suppress-shortcuts`; the focused
 * element itself matches `.jp-Notebook.jp-mod-commandMode :focus`, so the attribute on the
 * widget's root is never reached — it must sit on every focusable element.
 */
export function suppressShortcuts(el) {
  el.setAttribute("data-lm-suppress-shortcuts", "true");
  return el;
}

function guard(el, tag, attrs) {
  if (FOCUSABLE.has(tag) || (attrs && attrs.tabindex !== undefined && attrs.tabindex !== null)) suppressShortcuts(el);
  return el;
}

/** HTML element: h("div", {class: "x", onclick: fn}, child, "text", ...); focusable ones suppress notebook shortcuts. */
export function h(tag, attrs, ...children) {
  return append(guard(apply(document.createElement(tag), attrs), tag, attrs), children);
}

/** SVG element (focusable ones, with a tabindex, suppress notebook shortcuts). */
export function s(tag, attrs, ...children) {
  return append(guard(apply(document.createElementNS(SVG_NS, tag), attrs), tag, attrs), children);
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let uid = 0;
/** A page-unique id prefix (several widget views may share a page). */
export function uniqueId(prefix = "hx") {
  uid += 1;
  return `${prefix}-${uid}-${Math.random().toString(36).slice(2, 7)}`;
}

/**
 * Coalesce updates to at most one run per animation frame per key (latest wins).
 * Falls back to a timer when the page is hidden (no animation frames there).
 */
export function frameScheduler() {
  const pending = new Map();
  let handle = null;
  let timer = null;
  let dead = false;
  const flush = () => {
    handle = null;
    if (timer !== null) { clearTimeout(timer); timer = null; }
    const jobs = [...pending.values()];
    pending.clear();
    for (const fn of jobs) {
      try { fn(); } catch (err) { console.error("hessexplore widget:", err); }
    }
  };
  return {
    schedule(key, fn) {
      if (dead) return;
      pending.set(key, fn);
      if (handle === null && typeof requestAnimationFrame === "function") handle = requestAnimationFrame(flush);
      if (timer === null) timer = setTimeout(() => { if (handle !== null && typeof cancelAnimationFrame === "function") cancelAnimationFrame(handle); flush(); }, 250);
    },
    flush,
    destroy() {
      dead = true;
      pending.clear();
      if (handle !== null && typeof cancelAnimationFrame === "function") cancelAnimationFrame(handle);
      if (timer !== null) clearTimeout(timer);
    },
  };
}

/** Resolved colours of the theme (CSS custom properties on the root), as CSS strings. */
export function themeColors(root) {
  const cs = getComputedStyle(root);
  const get = (name, fallback) => (cs.getPropertyValue(name) || "").trim() || fallback;
  return {
    fg: get("--hx-fg", "#222"),
    fg2: get("--hx-fg2", "#555"),
    fg3: get("--hx-fg3", "#888"),
    bg: get("--hx-bg", "#fff"),
    bg2: get("--hx-bg2", "#eee"),
    border: get("--hx-border", "#bbb"),
    border2: get("--hx-border2", "#ddd"),
    accent: get("--hx-accent", "#1976d2"),
    v: get("--hx-v", "#1976d2"),
    w: get("--hx-w", "#e65100"),
    err: get("--hx-err", "#d32f2f"),
    font: get("--hx-font", "sans-serif"),
    mono: get("--hx-mono", "monospace"),
  };
}

/** Size a canvas for crisp drawing at devicePixelRatio; returns its 2D context (scaled to CSS px). */
export function sizeCanvas(canvas, cssW, cssH) {
  const dpr = Math.max(1, Math.min(3, (typeof window !== "undefined" && window.devicePixelRatio) || 1));
  const w = Math.max(1, Math.round(cssW));
  const hgt = Math.max(1, Math.round(cssH));
  canvas.style.width = w + "px";
  canvas.style.height = hgt + "px";
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(hgt * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** Position a floating tooltip inside `container` near a client point, kept in bounds. */
export function placeTooltip(tip, container, clientX, clientY, offset = 14) {
  const cr = container.getBoundingClientRect();
  tip.style.left = "0px";
  tip.style.top = "0px";
  const tw = tip.offsetWidth;
  const th = tip.offsetHeight;
  let x = clientX - cr.left + offset;
  let y = clientY - cr.top + offset;
  if (x + tw > cr.width - 4) x = Math.max(4, clientX - cr.left - tw - offset);
  if (y + th > cr.height - 4) y = Math.max(4, clientY - cr.top - th - offset);
  tip.style.left = Math.round(x) + "px";
  tip.style.top = Math.round(y) + "px";
}

/**
 * "From an earlier pick" marker of a panel: `set(section, current, text)` toggles the panel's
 * `hx-stale` class and `data-hx-current` attribute and shows `text` in a banner while stale.
 */
export function staleBanner() {
  const el = h("div", { class: "hx-stale-banner", "data-hx-stale": "", hidden: true, role: "note" });
  return {
    el,
    set(section, current, text) {
      section.classList.toggle("hx-stale", !current);
      section.setAttribute("data-hx-current", current ? "true" : "false");
      el.hidden = current;
      el.textContent = current ? "" : text;
    },
  };
}
