// The model graph panel: dagre layout drawn as SVG, with pan / zoom / fit, collapsible
// container boxes, node picking (mouse and keyboard) and hover tooltips.

import { h, add, s, clear, uniqueId, placeTooltip } from "./dom.js";
import { edgePath, bounds, shortLabel } from "./layout.js";
import { layoutNested } from "./nested.js";
import { visibleGraph, containersOf, pickName } from "./collapse.js";
import { formatInt, formatShape, formatNumber } from "./codec.js";
import { nodeValues } from "./replay.js";

const MIN_K = 0.02;
const MAX_K = 4;
const READABLE_K = 0.85; // the automatic first view never shrinks text below this (⤢ fits all)

function textMeasurer(root) {
  const ctx = document.createElement("canvas").getContext("2d");
  let fonts = null;
  return (text, kind) => {
    if (!fonts) {
      const mono = (getComputedStyle(root).getPropertyValue("--hx-mono") || "monospace").trim();
      fonts = { title: `600 12.5px ${mono}`, sub: `11px ${mono}`, box: `10.5px ${mono}` };
    }
    ctx.font = fonts[kind] || fonts.title;
    return ctx.measureText(String(text)).width;
  };
}

/**
 * @param {{root: Element, onPick(name: string, node: object), onToggle(container: string),
 *   onSelf(), onClear(), onReplayHidden?(groups: string[])}} opts
 */
export function createGraphPanel(opts) {
  const uid = uniqueId("hxg");
  const arrowId = `${uid}-arrow`;
  let graph = null;
  let vis = null;
  let lay = null;
  let cons = new Map();
  let space = "activation";
  let selection = { v: null, w: null };
  let replay = null; // {stat, label, step, values: Map<group, value>, scale}
  let replayNodes = new Map(); // visible node id -> {group, value}
  let needsFit = true;
  let userMoved = false; // panned / zoomed by hand since the last automatic fit
  const nodeEls = new Map();
  const edgeEls = [];

  // ---- header: picked pair + buttons ----
  const chip = (key, cls) => {
    const name = h("span", { class: "hx-chip-name" }, "—");
    const el = h("span", { class: ["hx-chip", cls], title: key === "v" ? "rows (first pick)" : "columns (second pick)" },
      h("span", { class: "hx-chip-key" }, key), name);
    return { el, name };
  };
  const chipV = chip("v", "hx-chip-v");
  const chipW = chip("w", "hx-chip-w");
  const selfBtn = h("button", { class: "hx-btn hx-small", type: "button", "data-hx-action": "self", title: "Diagonal block: w = v", onclick: () => opts.onSelf() }, "Self");
  const clearBtn = h("button", { class: "hx-btn hx-small", type: "button", "data-hx-action": "clear", title: "Clear the selection (Esc)", onclick: () => opts.onClear() }, "Clear");
  // ---- search: find a node by (part of) its name; Enter jumps to the next match ----
  const listId = `${uid}-names`;
  const names = h("datalist", { id: listId });
  const search = h("input", { type: "search", class: "hx-search", placeholder: "find a node…", list: listId,
    "data-hx-control": "search", "aria-label": "Find a node by name (Enter: next match)", autocomplete: "off", spellcheck: "false" });
  const found = h("span", { class: "hx-search-count", "data-hx-search-count": "", "aria-live": "polite" });
  let hits = { query: "", list: [], at: -1 };
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); findNext(search.value, e.shiftKey ? -1 : 1); }
    else if (e.key === "Escape" && search.value) { e.stopPropagation(); search.value = ""; found.textContent = ""; }
  });
  search.addEventListener("input", () => {
    // a name picked from the suggestions (or typed in full) jumps at once
    if (graph && (graph.nodes.some((n) => String(n.id) === search.value) || cons.has(search.value))) findNext(search.value, 1);
    else if (!search.value) found.textContent = "";
  });
  const head = h("div", { class: "hx-panel-head" },
    h("span", { class: "hx-panel-title" }, "Graph"),
    h("span", { class: "hx-pick" }, chipV.el, h("span", { class: "hx-arrow-sep" }, "×"), chipW.el),
    h("span", { class: "hx-spacer" }),
    h("span", { class: "hx-search-wrap" }, search, names, found),
    selfBtn, clearBtn);

  // ---- canvas ----
  const svg = s("svg", { class: "hx-svg", role: "group", "aria-label": "Model graph" });
  const defs = s("defs", {},
    s("marker", { id: arrowId, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse", markerUnits: "userSpaceOnUse" },
      s("path", { class: "hx-arrowhead", d: "M0,1 L10,5 L0,9 z" })));
  const viewport = s("g", { class: "hx-viewport" });
  svg.append(defs, viewport);
  const tip = h("div", { class: "hx-tip", hidden: true, role: "tooltip" });
  const hint = h("div", { class: "hx-graph-hint" },
    "Click a node for v, then one for w (the same twice = diagonal) · Tab + Enter picks, Esc clears · drag pans, Ctrl + wheel zooms");
  const zoomBtn = (label, action, title, fn) => h("button", { class: "hx-btn", type: "button", "data-hx-action": action, title, "aria-label": title, onclick: fn }, label);
  const zoom = h("div", { class: "hx-zoom" },
    zoomBtn("+", "zoom-in", "Zoom in", () => zoomBy(1.25)),
    zoomBtn("−", "zoom-out", "Zoom out", () => zoomBy(0.8)),
    zoomBtn("⤢", "fit", "Fit the graph", () => fit()));
  // The graph scrolls natively inside `area` (the SVG is sized to the zoomed layout), so
  // scrollIntoView / focus() reach every node; zoom re-sizes the SVG.
  const area = h("div", { class: "hx-graph" }, svg);
  const wrap = h("div", { class: "hx-graph-wrap" }, area, zoom, tip);
  const el = h("section", { class: "hx-panel hx-graph-panel" }, head, wrap, hint);
  const measure = textMeasurer(opts.root);

  // ---- view: zoom k, SVG size and scroll position ----
  const M = 18; // margin around the layout (px)
  let k = 1;
  let origin = { x: 0, y: 0 }; // layout point drawn at SVG (0, 0) is origin + ...
  function applyView() {
    if (!lay) return;
    const b = bounds(lay);
    const W = area.clientWidth;
    const H = area.clientHeight;
    const cw = b.width * k;
    const ch = b.height * k;
    const sw = Math.max(W, cw + 2 * M);
    const sh = Math.max(H, ch + 2 * M);
    const tx = Math.max(M, (sw - cw) / 2) - b.x * k;
    const ty = Math.max(M, (sh - ch) / 2) - b.y * k;
    origin = { x: tx, y: ty };
    svg.setAttribute("width", String(Math.ceil(sw)));
    svg.setAttribute("height", String(Math.ceil(sh)));
    viewport.setAttribute("transform", `translate(${tx.toFixed(2)},${ty.toFixed(2)}) scale(${k.toFixed(4)})`);
  }
  function fit(minK = 0) {
    if (!lay) return;
    const W = area.clientWidth;
    const H = area.clientHeight;
    if (!W || !H) { needsFit = true; return; }
    const b = bounds(lay);
    let kk = Math.min((W - 2 * M) / Math.max(1, b.width), (H - 2 * M) / Math.max(1, b.height), 1.2);
    kk = Math.max(MIN_K, kk);
    if (kk < minK) kk = minK; // too tall to read when fitted: readable scale, scroll for the rest
    k = kk;
    applyView();
    area.scrollLeft = Math.max(0, (area.scrollWidth - W) / 2);
    area.scrollTop = 0;
    needsFit = false;
    userMoved = false;
  }
  function zoomAt(px, py, factor) {
    if (!lay) return;
    const nk = Math.min(MAX_K, Math.max(MIN_K, k * factor));
    // layout point under (px, py) of the visible area stays put
    const lx = (area.scrollLeft + px - origin.x) / k;
    const ly = (area.scrollTop + py - origin.y) / k;
    k = nk;
    applyView();
    area.scrollLeft = lx * k + origin.x - px;
    area.scrollTop = ly * k + origin.y - py;
    userMoved = true;
  }
  function zoomBy(factor) {
    zoomAt(area.clientWidth / 2, area.clientHeight / 2, factor);
  }

  // pan by dragging (scrolls), with a threshold so clicks still pick nodes
  let drag = null;
  let suppressClick = false;
  area.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    drag = { id: e.pointerId, x: e.clientX, y: e.clientY, sl: area.scrollLeft, st: area.scrollTop, moving: false };
  });
  area.addEventListener("pointermove", (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (!drag.moving && Math.hypot(dx, dy) < 4) return;
    if (!drag.moving) {
      drag.moving = true;
      area.classList.add("hx-panning");
      try { area.setPointerCapture(e.pointerId); } catch (_) { /* ignore */ }
      hideTip();
    }
    area.scrollLeft = drag.sl - dx;
    area.scrollTop = drag.st - dy;
    userMoved = true;
  });
  const endDrag = (e) => {
    if (!drag || (e && e.pointerId !== drag.id)) return;
    if (drag.moving) {
      suppressClick = true;
      setTimeout(() => { suppressClick = false; }, 0);
      area.classList.remove("hx-panning");
    }
    drag = null;
  };
  area.addEventListener("pointerup", endDrag);
  area.addEventListener("pointercancel", endDrag);
  // The wheel scrolls (the graph box, then the notebook once the box is at its end);
  // Ctrl / ⌘ + wheel (and a trackpad pinch, which the browser sends as Ctrl + wheel) zooms.
  area.addEventListener("wheel", (e) => {
    if (!(e.ctrlKey || e.metaKey)) return;
    e.preventDefault();
    const r = area.getBoundingClientRect();
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
    zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-e.deltaY * unit * 0.0015));
  }, { passive: false });
  area.addEventListener("scroll", () => { if (!drag) hideTip(); }, { passive: true });

  /** Matches of a query: exact id first, then ids / container names containing it (case-insensitive). */
  function matches(query) {
    const q = query.trim().toLowerCase();
    if (!q || !graph) return [];
    const ids = [...graph.nodes.map((n) => String(n.id)), ...[...cons.keys()].filter((c) => !graph.nodes.some((n) => String(n.id) === c))];
    const exact = ids.filter((id) => id.toLowerCase() === q);
    return [...exact, ...ids.filter((id) => id.toLowerCase() !== q && id.toLowerCase().includes(q))];
  }
  function findNext(query, step) {
    if (hits.query !== query) hits = { query, list: matches(query), at: step > 0 ? -1 : 0 };
    const n = hits.list.length;
    if (!n) { found.textContent = query.trim() ? "no match" : ""; return null; }
    hits.at = (hits.at + step + n) % n;
    const name = hits.list[hits.at];
    found.textContent = `${hits.at + 1}/${n}`;
    reveal(name);
    return name;
  }
  /** Expand whatever hides `name` (a node or a container), scroll it into view and flash it. */
  function reveal(name) {
    const node = graph.nodes.find((n) => String(n.id) === name);
    const scope = node ? (node.scope || []).map(String) : (cons.get(name) ? cons.get(name).scope : []);
    const open = scope.filter((c) => collapsedSet.has(c));
    if (node && collapsedSet.has(name)) open.push(name);      // a node named like its collapsed container
    if (open.length && opts.onExpand) opts.onExpand(open);
    const id = nodeEls.has(name) ? name : vis && vis.rep.has(name) ? vis.rep.get(name) : null;
    const boxLay = lay && lay.boxes.find((b) => b.id === name);
    const target = id !== null ? lay.nodes.find((n) => n.id === id) : boxLay;
    if (!target) return;
    const cx = origin.x + (target.x + target.width / 2) * k;
    const cy = origin.y + (target.y + Math.min(target.height, 60) / 2) * k;
    area.scrollLeft = Math.max(0, cx - area.clientWidth / 2);
    area.scrollTop = Math.max(0, cy - area.clientHeight / 2);
    userMoved = true;
    for (const g of viewport.querySelectorAll(".hx-found")) g.classList.remove("hx-found");
    const g = id !== null ? nodeEls.get(id) : viewport.querySelector(`[data-hx-box="${CSS.escape(name)}"]`);
    if (g) g.classList.add("hx-found");
  }

  // ---- tooltip ----
  function hideTip() { tip.hidden = true; }
  function tipRows(n) {
    const rows = [];
    const row = (k, v) => { if (v !== undefined && v !== null && v !== "") rows.push(h("tr", {}, h("td", {}, k), h("td", {}, String(v)))); };
    row("op", n.collapsed ? `${n.op} (collapsed)` : n.kind && n.kind !== n.op ? `${n.op} · ${n.kind}` : n.op);
    row("shape", n.shape ? `${formatShape(n.shape)} per sample` : "—");
    row("numel", formatInt(n.numel));
    row("params", formatInt(n.params || 0));
    const dev = graph ? [graph.device, graph.dtype].filter(Boolean).join(" · ") : "";
    row("device", dev || "—");
    if (n.aliases && n.aliases.length) row("output of", n.aliases.join(", "));
    if (n.collapsed) row("contains", `${n.members} nodes`);
    const r = replay && replayNodes.get(String(n.id));
    if (r) row(`${replay.label} @ ${replay.step ?? "?"}`, `${r.value === null ? "—" : formatNumber(r.value, 4)}${r.group !== String(n.id) ? ` (${r.group})` : ""}`);
    return rows;
  }
  function showTip(n, clientX, clientY) {
    const name = pickName(n, space, groupSet);
    let note = "";
    if (n.collapsed && !n.addressable && space === "activation") note = "not addressable: click to expand";
    else if (name === null) note = space === "parameter" ? "no parameters: not a parameter group" : "not addressable";
    else if (n.collapsed) note = "click to pick · + expands";
    add(clear(tip),
      h("div", { class: "hx-tip-title" }, String(n.id)),
      h("table", {}, h("tbody", {}, tipRows(n))),
      note ? h("div", { class: "hx-tip-note" }, note) : null,
    );
    tip.hidden = false;
    placeTooltip(tip, wrap, clientX, clientY);
  }

  // ---- drawing ----
  function toggleEl(name, expanded, x, y, size = 12) {
    const label = `${expanded ? "Collapse" : "Expand"} ${name}`;
    const c = size / 2;
    const a = size * 0.27;
    const t = s("g", { class: "hx-toggle", role: "button", tabindex: 0, "aria-label": label, "data-hx-toggle": name, transform: `translate(${x},${y})` },
      s("title", {}, label),
      s("rect", { width: size, height: size, rx: 2.5 }),
      s("path", { d: expanded ? `M${c - a},${c} H${c + a}` : `M${c - a},${c} H${c + a} M${c},${c - a} V${c + a}` }));
    const act = (e) => { e.stopPropagation(); e.preventDefault(); hideTip(); opts.onToggle(name); };
    t.addEventListener("click", (e) => { if (!suppressClick) act(e); });
    t.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") act(e); });
    return t;
  }

  /** Longest prefix of text (with an ellipsis) that fits maxW px in the given font kind. */
  function fitText(text, maxW, kind) {
    if (measure(text, kind) <= maxW) return text;
    let lo = 0;
    let hi = text.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (measure(text.slice(0, mid) + "…", kind) <= maxW) lo = mid; else hi = mid - 1;
    }
    return lo > 0 ? text.slice(0, lo) + "…" : "";
  }

  function draw() {
    clear(viewport);
    nodeEls.clear();
    edgeEls.length = 0;
    if (!lay) return;
    const gBoxes = s("g", { class: "hx-boxes" });
    const gToggles = s("g", { class: "hx-box-toggles" });
    const gLabels = s("g", { class: "hx-box-labels" });
    for (const b of lay.boxes) {
      const short = shortLabel(b.id, b.parent);
      const room = b.width - 26;
      const withType = b.box.type ? `${short} · ${b.box.type}` : short;
      const text = measure(withType, "box") <= room ? withType : fitText(short, room, "box");
      const label = s("text", { class: "hx-box-label", x: b.x + 22, y: b.y + 11.5 });
      if (text.startsWith(short) && text.length > short.length) label.append(short, s("tspan", { class: "hx-box-type" }, text.slice(short.length)));
      else label.append(text);
      gBoxes.append(s("g", { class: "hx-box", "data-hx-box": b.id },
        s("title", {}, b.box.type ? `${b.id} (${b.box.type})` : b.id),
        s("rect", { class: "hx-box-rect", x: b.x, y: b.y, width: b.width, height: b.height, rx: 7 })));
      // labels are drawn above the edges, on a halo of the background, so a line never hides them
      gLabels.append(label);
      // box toggles live in a layer after the nodes: Tab reaches the nodes first
      gToggles.append(toggleEl(b.id, true, b.x + 5, b.y + 2.5, 11));
    }
    const gEdges = s("g", { class: "hx-edges" });
    for (const e of lay.edges) {
      const p = s("path", { class: "hx-edge", d: edgePath(e.points), "marker-end": `url(#${arrowId})` });
      p.__hx = e;
      edgeEls.push(p);
      gEdges.append(p);
    }
    const gNodes = s("g", { class: "hx-nodes" });
    for (const ln of lay.nodes) {
      const n = ln.node;
      const name = pickName(n, space, groupSet);
      const disabled = name === null && !(n.collapsed && space === "activation" && !n.addressable);
      const cls = ["hx-node", n.collapsed && "hx-collapsed", n.kind === "input" && "hx-input", disabled && "hx-disabled"];
      const label = `${n.id}, ${n.op || ""}${n.shape ? ", shape " + formatShape(n.shape) : ""}${disabled ? " (not selectable)" : ""}`;
      const g = s("g", {
        class: cls, "data-hx-node": n.id, tabindex: 0, role: "button", "aria-label": label,
        "aria-disabled": disabled ? "true" : null, "data-hx-aliases": (n.aliases || []).join(" ") || null,
        transform: `translate(${ln.x},${ln.y})`,
      });
      if (n.collapsed) g.append(s("rect", { class: "hx-node-stack", x: 4, y: -4, width: ln.width, height: ln.height, rx: 6 }));
      g.append(
        s("rect", { class: "hx-node-focus", x: -3.5, y: -3.5, width: ln.width + 7, height: ln.height + 7, rx: 8 }),
        s("rect", { class: "hx-node-rect", width: ln.width, height: ln.height, rx: 6 }),
        s("text", { class: "hx-node-title", x: ln.width / 2, y: 15.5, "text-anchor": "middle" }, ln.lines.title),
        s("text", { class: "hx-node-sub", x: ln.width / 2, y: 29.5, "text-anchor": "middle" }, ln.lines.sub));
      if ((Number(n.params) || 0) > 0 && !n.collapsed) g.append(s("circle", { class: "hx-param-dot", cx: 8, cy: 8, r: 2.5 }));
      if (n.collapsed) g.append(toggleEl(n.id, false, 5, (ln.height - 12) / 2, 12));
      const badges = s("g", { class: "hx-badges" });
      g.append(badges);
      g.__hx = { node: n, badges, width: ln.width, rect: g.querySelector(".hx-node-rect") };
      const activate = () => {
        if (n.collapsed && n.target === null && space === "activation") { opts.onToggle(n.id); return; }
        if (name !== null) opts.onPick(name, n);
      };
      g.addEventListener("click", () => { if (!suppressClick) activate(); });
      g.addEventListener("keydown", (e) => {
        if (e.target !== g) return;
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); activate(); }
      });
      g.addEventListener("pointerenter", (e) => { if (!drag) { showTip(n, e.clientX, e.clientY); hot(n.id, true); } });
      g.addEventListener("pointermove", (e) => { if (!drag && !tip.hidden) placeTooltip(tip, wrap, e.clientX, e.clientY); });
      g.addEventListener("pointerleave", () => { hideTip(); hot(n.id, false); });
      g.addEventListener("focus", () => {
        const r = g.getBoundingClientRect();
        showTip(n, r.right, r.top);
        hot(n.id, true);
      });
      g.addEventListener("blur", () => { hideTip(); hot(n.id, false); });
      nodeEls.set(String(n.id), g);
      gNodes.append(g);
    }
    viewport.append(gBoxes, gEdges, gLabels, gNodes, gToggles);
    markSelection();
    markReplay();
  }

  /** Colour the nodes of tracked groups by the replayed statistic (see replay.js). */
  function markReplay() {
    const { nodes, hidden } = replay ? nodeValues(replay.values, visibleFor) : { nodes: new Map(), hidden: [] };
    replayNodes = nodes;
    for (const [id, g] of nodeEls) {
      const rect = g.__hx.rect;
      const e = nodes.get(id);
      g.classList.toggle("hx-replay-on", !!e);
      g.classList.toggle("hx-replay-missing", !!e && e.value === null);
      if (e) {
        g.setAttribute("data-hx-replay-value", e.value === null ? "NaN" : String(e.value));
        g.setAttribute("data-hx-replay-group", e.group);
        rect.style.fill = e.value === null ? "" : replay.scale.css(e.value);
      } else {
        g.removeAttribute("data-hx-replay-value");
        g.removeAttribute("data-hx-replay-group");
        rect.style.fill = "";
      }
    }
    if (opts.onReplayHidden) opts.onReplayHidden(replay ? hidden : []);
  }

  function hot(id, on) {
    for (const p of edgeEls) if (p.__hx.source === id || p.__hx.target === id) p.classList.toggle("hx-hot", on);
  }

  /** The visible node that stands for a selected name (node id, container, or alias). */
  function visibleFor(name) {
    if (name === null || name === undefined || !vis) return null;
    const n = String(name);
    if (nodeEls.has(n)) return n;
    const c = cons.get(n);
    if (c && c.exit !== null && vis.rep.has(c.exit)) return vis.rep.get(c.exit);
    for (const node of (graph && graph.nodes) || []) if ((node.aliases || []).includes(n) && vis.rep.has(String(node.id))) return vis.rep.get(String(node.id));
    return null;
  }

  function markSelection() {
    const vId = visibleFor(selection.v);
    const wId = visibleFor(selection.w);
    for (const [id, g] of nodeEls) {
      g.classList.toggle("hx-sel-v", id === vId);
      g.classList.toggle("hx-sel-w", id === wId);
      const { badges, width } = g.__hx;
      clear(badges);
      const keys = [];
      if (id === vId) keys.push("v");
      if (id === wId) keys.push("w");
      keys.forEach((k, i) => badges.append(s("g", { class: `hx-badge hx-badge-${k}`, transform: `translate(${width - 2 - 18 * (keys.length - 1 - i)},${-2})` },
        s("circle", { r: 8 }), s("text", { "text-anchor": "middle", y: 3.5 }, k))));
      g.setAttribute("aria-pressed", id === vId || id === wId ? "true" : "false");
    }
    const setChip = (c, name, waiting) => {
      c.name.textContent = name ?? (waiting ? "pick a node" : "—");
      c.el.classList.toggle("hx-set", name !== null && name !== undefined);
      c.el.classList.toggle("hx-waiting", !!waiting && (name === null || name === undefined));
      c.el.title = name ?? "";
    };
    setChip(chipV, selection.v, selection.v === null || selection.v === undefined);
    setChip(chipW, selection.w, selection.v !== null && selection.v !== undefined && (selection.w === null || selection.w === undefined));
    selfBtn.disabled = !selection.v;
    clearBtn.disabled = !selection.v && !selection.w;
  }

  const empty = h("div", { class: "hx-empty hx-graph-empty", hidden: true });
  wrap.append(empty);
  function relayout(refit) {
    const none = !graph || graph.nodes.length === 0;
    empty.hidden = !none;
    empty.textContent = !graph ? "No graph yet." : "No graph: the model was not traced. Parameter-space blocks work from Python: w.select(group_a, group_b, space=\"parameter\").";
    if (none) { lay = null; vis = null; draw(); svg.setAttribute("width", "0"); svg.setAttribute("height", "0"); return; }
    vis = visibleGraph(graph, collapsedSet);
    const t0 = performance.now();
    lay = layoutNested(vis, { measure, nodeHeight: 36, ranksep: 30, nodesep: 20, minNodeWidth: 84, cache: layoutCache });
    const t1 = performance.now();
    draw();
    // timing hooks (benchmarks read them; nothing depends on them)
    el.setAttribute("data-hx-layout-ms", (t1 - t0).toFixed(1));
    el.setAttribute("data-hx-draw-ms", (performance.now() - t1).toFixed(1));
    el.setAttribute("data-hx-visible-nodes", String(vis.nodes.length));
    if (refit) fit(READABLE_K);
  }

  let collapsedSet = new Set();
  let layoutCache = new Map();
  let groupSet = new Set();
  const ro = typeof ResizeObserver === "function" ? new ResizeObserver(() => { if (needsFit || !userMoved) fit(READABLE_K); else applyView(); }) : null;
  if (ro) ro.observe(area);

  return {
    el,
    /** Replace the graph (and the collapsed container set); refits the view. */
    setGraph(g, collapsed) {
      graph = g && Array.isArray(g.nodes) ? g : null;
      cons = graph ? containersOf(graph) : new Map();
      collapsedSet = new Set(collapsed || []);
      layoutCache = new Map();
      groupSet = new Set(graph && Array.isArray(graph.groups) ? graph.groups.map(String) : []);
      clear(names);
      const all = graph ? [...new Set([...graph.nodes.map((n) => String(n.id)), ...cons.keys()])].sort() : [];
      for (const id of all.slice(0, 5000)) names.append(h("option", { value: id }));
      hits = { query: "", list: [], at: -1 };
      needsFit = true;
      relayout(true);
    },
    /** Change only the collapsed set; keeps the zoom level, refits position. */
    /**
     * Change only the collapsed set. With `anchor` (the container just toggled) the zoom is
     * kept and the view scrolls so the anchor stays where it was on screen; else it refits.
     */
    setCollapsed(collapsed, anchor = null) {
      const where = (id) => {
        if (!lay || id === null) return null;
        const t = lay.nodes.find((n) => n.id === id) || lay.boxes.find((b) => b.id === id);
        return t ? { x: origin.x + t.x * k - area.scrollLeft, y: origin.y + t.y * k - area.scrollTop } : null;
      };
      const before = where(anchor);
      collapsedSet = new Set(collapsed || []);
      relayout(before === null);
      if (before === null) return;
      applyView();
      const after = where(anchor);
      if (after) {
        area.scrollLeft += after.x - before.x;
        area.scrollTop += after.y - before.y;
      }
    },
    setSelection(sel) {
      selection = { v: sel && sel.v != null ? String(sel.v) : null, w: sel && sel.w != null ? String(sel.w) : null };
      markSelection();
    },
    /** Replay view from the replay bar (null: no colouring). */
    setReplay(view) {
      replay = view && view.values ? view : null;
      markReplay();
    },
    setSpace(sp) {
      if (sp === space) return;
      space = sp === "parameter" ? "parameter" : "activation";
      draw();
    },
    fit: () => fit(0),
    /** Find and reveal a node or container by name (the search box's Enter); returns it or null. */
    find: (query) => findNext(query, 1),
    /** Milliseconds of the last layout and draw (for benchmarks). */
    timings: () => ({ layout: Number(el.getAttribute("data-hx-layout-ms")), draw: Number(el.getAttribute("data-hx-draw-ms")) }),
    /** Pickable names of the visible nodes (for a coupling map of what is shown). */
    visibleNames() {
      if (!vis) return [];
      return vis.nodes.map((n) => pickName(n, space, groupSet)).filter((x) => x !== null);
    },
    isCollapsedView() { return !!vis && vis.collapsed.size > 0; },
    /** Stand-alone SVG document of the whole graph with computed colours inlined. */
    exportSVG() {
      if (!lay) return null;
      const b = bounds(lay);
      const m = 16;
      const clone = svg.cloneNode(true);
      inlineStyles(svg, clone);
      clone.setAttribute("xmlns", "http://www.w3.org/2000/svg");
      clone.setAttribute("viewBox", `${b.x - m} ${b.y - m} ${b.width + 2 * m} ${b.height + 2 * m}`);
      clone.setAttribute("width", String(Math.ceil(b.width + 2 * m)));
      clone.setAttribute("height", String(Math.ceil(b.height + 2 * m)));
      clone.removeAttribute("class");
      clone.removeAttribute("style");
      const vp = clone.querySelector(".hx-viewport");
      if (vp) vp.removeAttribute("transform");
      const bg = getComputedStyle(area).backgroundColor;
      const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      rect.setAttribute("x", String(b.x - m));
      rect.setAttribute("y", String(b.y - m));
      rect.setAttribute("width", String(b.width + 2 * m));
      rect.setAttribute("height", String(b.height + 2 * m));
      rect.setAttribute("fill", bg && bg !== "rgba(0, 0, 0, 0)" ? bg : "white");
      clone.insertBefore(rect, clone.firstChild.nextSibling);
      clone.querySelectorAll(".hx-badges:empty, title").forEach((n) => n.remove());
      return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(clone);
    },
    destroy() { if (ro) ro.disconnect(); },
  };
}

const STYLE_PROPS = ["fill", "fill-opacity", "stroke", "stroke-width", "stroke-dasharray", "stroke-opacity", "opacity",
  "font-family", "font-size", "font-weight", "text-anchor"];

function inlineStyles(src, dst) {
  const a = [src, ...src.querySelectorAll("*")];
  const b = [dst, ...dst.querySelectorAll("*")];
  for (let i = 0; i < a.length && i < b.length; i++) {
    const tag = a[i].tagName.toLowerCase();
    if (tag === "svg" || tag === "defs" || tag === "marker" || tag === "title") continue;
    const cs = getComputedStyle(a[i]);
    const decl = STYLE_PROPS.map((p) => `${p}:${cs.getPropertyValue(p)}`).join(";");
    b[i].setAttribute("style", decl);
    b[i].removeAttribute("tabindex");
    b[i].removeAttribute("data-lm-suppress-shortcuts");
  }
}
