// Nested (per-container) layered layout: fast expand / collapse of big graphs.
//
// Pure: no DOM. dagre's compound layout of a whole 400-node graph with its container boxes
// takes seconds; laying out each expanded container on its own — its direct nodes, its
// child containers as single big nodes, and two virtual ports (⊤ where edges from outside
// enter, ⊥ where edges to the outside leave) — costs a few small layouts, and each one is
// cached by its content. Expanding or collapsing one container then lays out that container
// and its ancestors only (the siblings come from the cache).
//
// An edge s → t is drawn as one polyline joined from the pieces of each level it crosses:
// s → ⊥ in every container between s and the lowest common container, the edge between the
// two items there, then ⊤ → t down to t. The ports sit above every source (⊤) and below
// every sink (⊥) of their container (zero-weight guide edges), so edges enter a box at its
// top and leave at its bottom and never cut across its members.
//
// Output is the same as layoutGraph's: {width, height, nodes, edges, boxes} in absolute
// layout pixels, boxes outer first.

import { DEFAULTS, edgePairs, nodeLines } from "./layout.js";
import { layered } from "./layered.js";

const TOP = "\u0001top";
const BOTTOM = "\u0001bottom";
const BOX = (id) => "\u0001box:" + id;

/** Box padding around a container's inner layout: room for its label on top. */
export const BOX_PAD = { top: 20, side: 8, bottom: 8 };

function nodeSize(n, o, measure) {
  const lines = nodeLines(n);
  const extra = n.collapsed ? 2 * o.toggleRoom : 0;
  const w = Math.min(o.maxNodeWidth + extra, Math.max(o.minNodeWidth,
    Math.ceil(Math.max(measure(lines.title, "title"), measure(lines.sub, "sub")) + 2 * o.padX + extra)));
  return { width: w, height: o.nodeHeight, lines };
}

/**
 * Lay out a visible graph (collapse.js `visibleGraph` output) level by level.
 * @param {{nodes, edges, boxes}} vis
 * @param {object} [options] DEFAULTS overrides, `measure(text, kind)`, and
 *   `cache` (a Map kept between calls: per-container layouts by content)
 * @returns {{width, height, nodes, edges, boxes, stats: {levels: number, cached: number}}}
 */
export function layoutNested(vis, options = {}) {
  const o = { ...DEFAULTS, ...options };
  const measure = options.measure || ((t, k) => String(t).length * (k === "sub" ? o.subCharWidth : o.charWidth));
  const cache = options.cache || null;
  const nodes = (vis && vis.nodes) || [];
  const boxList = ((vis && vis.boxes) || []).map((b) => ({ ...b, id: String(b.id), parent: b.parent == null ? null : String(b.parent) }));
  const boxById = new Map(boxList.map((b) => [b.id, b]));
  const nodeById = new Map(nodes.map((n) => [String(n.id), n]));
  const parentOf = (id, isBox) => {
    const p = isBox ? boxById.get(id).parent : nodeById.get(id).parent;
    return p != null && boxById.has(String(p)) ? String(p) : null;
  };
  // children per level (null = root); keep only boxes that hold something
  const kids = new Map([[null, { nodes: [], boxes: [] }]]);
  const level = (id) => { if (!kids.has(id)) kids.set(id, { nodes: [], boxes: [] }); return kids.get(id); };
  for (const n of nodes) level(parentOf(String(n.id), false)).nodes.push(String(n.id));
  const live = new Set();
  for (const n of nodes) {
    for (let p = parentOf(String(n.id), false); p !== null && !live.has(p); p = parentOf(p, true)) live.add(p);
  }
  for (const b of boxList) if (live.has(b.id)) level(parentOf(b.id, true)).boxes.push(b.id);
  // ancestor chains: [item itself, parent box, ..., null]
  const chain = (id) => {
    const out = [id];
    for (let p = parentOf(id, false); p !== null; p = parentOf(p, true)) out.push(p);
    out.push(null);
    return out;
  };
  const itemKey = (id, isBox) => (isBox ? BOX(id) : id);
  // per-level edges between items, and where each real edge's pieces are
  const levelEdges = new Map();
  const addLevelEdge = (lvl, a, b) => {
    if (!levelEdges.has(lvl)) levelEdges.set(lvl, new Map());
    const m = levelEdges.get(lvl);
    const k = a + "\u0000" + b;
    if (!m.has(k)) m.set(k, [a, b]);
    return k;
  };
  const edges = [];
  const seen = new Set();
  for (const [s, t] of edgePairs(vis && vis.edges)) {
    if (s === t || !nodeById.has(s) || !nodeById.has(t)) continue;
    const key = s + "\u0000" + t;
    if (seen.has(key)) continue;
    seen.add(key);
    const cs = chain(s);
    const ct = chain(t);
    const inT = new Set(ct.slice(1));
    let i = 1;
    while (!inT.has(cs[i])) i++;
    const lca = cs[i];
    const j = 1 + ct.slice(1).indexOf(lca);   // (a node may share its name with its own box)
    const pieces = [];
    // s side: inside each box below the lca, from s's item to that box's bottom port
    for (let k = 1; k < i; k++) pieces.push([cs[k], addLevelEdge(cs[k], itemKey(cs[k - 1], k > 1), BOTTOM)]);
    pieces.push([lca, addLevelEdge(lca, itemKey(cs[i - 1], i > 1), itemKey(ct[j - 1], j > 1))]);
    for (let k = j - 1; k >= 1; k--) pieces.push([ct[k], addLevelEdge(ct[k], TOP, itemKey(ct[k - 1], k > 1))]);
    edges.push({ source: s, target: t, pieces });
  }

  // bottom-up layouts of every level
  const layouts = new Map();
  let cached = 0;
  const sizes = new Map();   // item key -> {width, height, lines?}
  for (const n of nodes) sizes.set(String(n.id), nodeSize(n, o, measure));
  const order = [];
  const visit = (lvl) => { for (const b of level(lvl).boxes) visit(b); order.push(lvl); };
  visit(null);
  for (const lvl of order) {
    const k = level(lvl);
    const items = [...k.nodes.map((id) => [id, sizes.get(id)]), ...k.boxes.map((b) => [BOX(b), sizes.get(BOX(b))])];
    const ledges = [...((levelEdges.get(lvl) || new Map()).values())];
    const sig = lvl + "\u0002" + items.map(([id, sz]) => `${id}:${sz.width}x${sz.height}`).join("|") + "\u0002"
      + ledges.map((e) => e.join(">")).join("|");
    let lay = cache ? cache.get(sig) : undefined;
    if (lay) cached += 1;
    else {
      lay = layoutLevel(items, ledges, o, lvl === null);
      if (cache) {
        if (cache.size > 4000) cache.clear();
        cache.set(sig, lay);
      }
    }
    layouts.set(lvl, lay);
    if (lvl !== null) {
      sizes.set(BOX(lvl), { width: lay.width + 2 * BOX_PAD.side, height: lay.height + BOX_PAD.top + BOX_PAD.bottom });
    }
  }

  // top-down: absolute positions
  const origin = new Map([[null, { x: 0, y: 0 }]]);
  const outNodes = [];
  const outBoxes = [];
  const place = (lvl, depth) => {
    const lay = layouts.get(lvl);
    const org = origin.get(lvl);
    for (const id of level(lvl).nodes) {
      const p = lay.pos.get(id);
      const sz = sizes.get(id);
      const x = org.x + p.x - sz.width / 2;
      const y = org.y + p.y - sz.height / 2;
      outNodes.push({ id, node: nodeById.get(id), lines: sz.lines, width: sz.width, height: sz.height,
        x, y, cx: x + sz.width / 2, cy: y + sz.height / 2 });
    }
    for (const b of level(lvl).boxes) {
      const p = lay.pos.get(BOX(b));
      const sz = sizes.get(BOX(b));
      const x = org.x + p.x - sz.width / 2;
      const y = org.y + p.y - sz.height / 2;
      const bx = boxById.get(b);
      outBoxes.push({ id: b, label: bx.label ?? b, parent: lvl, depth, box: bx, width: sz.width, height: sz.height, x, y });
      origin.set(b, { x: x + BOX_PAD.side, y: y + BOX_PAD.top });
      place(b, depth + 1);
    }
  };
  place(null, 0);
  const outEdges = edges.map((e) => {
    const points = [];
    for (const [lvl, k] of e.pieces) {
      const org = origin.get(lvl);
      for (const p of layouts.get(lvl).edges.get(k) || []) {
        const q = { x: org.x + p.x, y: org.y + p.y };
        const last = points[points.length - 1];
        if (!last || Math.abs(last.x - q.x) > 0.5 || Math.abs(last.y - q.y) > 0.5) points.push(q);
      }
    }
    return { source: e.source, target: e.target, points };
  });
  outBoxes.sort((a, b) => a.depth - b.depth);
  const root = layouts.get(null);
  return { width: root.width, height: root.height, nodes: outNodes, edges: outEdges, boxes: outBoxes,
    stats: { levels: order.length, cached } };
}

/** Layout of one level: items [key, {width, height}], edges [[a, b]] (ports included). */
function layoutLevel(items, ledges, o, isRoot) {
  const hasTop = ledges.some(([a]) => a === TOP);
  const hasBottom = ledges.some(([, b]) => b === BOTTOM);
  const all = [...items];
  if (hasTop) all.unshift([TOP, { width: 1, height: 0 }]);
  if (hasBottom) all.push([BOTTOM, { width: 1, height: 0 }]);
  const lay = layered(all, ledges, {
    nodesep: o.nodesep, ranksep: o.ranksep, marginx: isRoot ? o.marginx : 0, marginy: isRoot ? o.marginy : 0,
    top: hasTop ? TOP : null, bottom: hasBottom ? BOTTOM : null,
  });
  // a port is a point on the box's edge: start / end its pieces exactly there
  for (const [k, pts] of lay.edges) {
    if (!pts.length) continue;
    if (k.startsWith(TOP + "\u0000")) pts[0] = { x: pts[0].x, y: 0 };
    if (k.endsWith("\u0000" + BOTTOM)) pts[pts.length - 1] = { x: pts[pts.length - 1].x, y: lay.height };
  }
  lay.pos.delete(TOP);
  lay.pos.delete(BOTTOM);
  lay.width = Math.max(lay.width, 1);
  lay.height = Math.max(lay.height, 1);
  return lay;
}
