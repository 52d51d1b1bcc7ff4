// Layered (Sugiyama) layout of a model graph with dagre, top to bottom.
//
// Pure: no DOM. Input is either the raw graph JSON of the widget protocol
// ({nodes: [{id, scope, ...}], edges: [[src, dst]]}) or a *visible* graph from
// collapse.js ({nodes: [{id, parent, ...}], edges, boxes: [{id, parent, label}]}).
// "Boxes" are the expanded container modules drawn as group boxes (dagre clusters);
// the protocol's `groups` (parameter-group names) are unrelated and ignored here.
// Output coordinates are in layout pixels, origin top-left.

import dagre from "@dagrejs/dagre";

export const DEFAULTS = {
  rankdir: "TB",
  nodesep: 18,
  ranksep: 34,
  edgesep: 10,
  marginx: 12,
  marginy: 12,
  nodeHeight: 36,
  minNodeWidth: 72,
  maxNodeWidth: 220,
  padX: 18,
  toggleRoom: 14,
  // approx. advance width (px) per character of the two node text lines
  charWidth: 7.0,
  subCharWidth: 6.0,
};

/** Edge list as [[src, dst], ...] whether given as pairs or {source, target}. */
export function edgePairs(edges) {
  const out = [];
  for (const e of edges || []) {
    if (Array.isArray(e)) out.push([String(e[0]), String(e[1])]);
    else if (e && typeof e === "object") out.push([String(e.source ?? e.src ?? e.v), String(e.target ?? e.dst ?? e.w)]);
  }
  return out;
}

/** Short text forms of a shape: [16] -> "16", [4, 8, 8] -> "4×8×8", [] -> "scalar". */
export function shapeText(shape) {
  if (!Array.isArray(shape)) return "";
  if (shape.length === 0) return "scalar";
  return shape.join("×");
}

/** Name of `id` relative to its parent group ("blocks.0.f.1" in "blocks.0.f" -> "1"). */
export function shortLabel(id, parent) {
  const s = String(id);
  if (parent && s.startsWith(parent + ".") && s.length > parent.length + 1) return s.slice(parent.length + 1);
  return s;
}

/** The two lines drawn in a node box. */
export function nodeLines(node) {
  const title = node.title ?? shortLabel(node.label ?? node.id, node.parent);
  const bits = [];
  if (node.op) bits.push(String(node.op));
  const st = shapeText(node.shape);
  if (st) bits.push(st);
  return { title: String(title), sub: bits.join(" · ") };
}

function defaultMeasure(text, kind, o) {
  return String(text).length * (kind === "sub" ? o.subCharWidth : o.charWidth);
}

function boxesFromScopes(nodes) {
  // Derive boxes (and node.parent) from `scope` when the caller passes raw graph JSON.
  const groups = new Map();
  const outNodes = nodes.map((n) => {
    const scope = Array.isArray(n.scope) ? n.scope : [];
    scope.forEach((name, i) => {
      if (!groups.has(name)) groups.set(name, { id: name, label: name, parent: i > 0 ? scope[i - 1] : null });
    });
    return { ...n, parent: n.parent !== undefined ? n.parent : scope.length ? scope[scope.length - 1] : null };
  });
  return { nodes: outNodes, boxes: [...groups.values()] };
}

/**
 * Lay out a graph.
 * @param {{nodes: object[], edges: Array, boxes?: object[]}} graph
 * @param {object} [options] overrides of DEFAULTS, plus `measure(text, "title"|"sub") -> px`
 * @returns {{width:number, height:number,
 *   nodes: Array<{id, x, y, width, height, cx, cy, node, lines}>,
 *   edges: Array<{source, target, points: Array<{x,y}>}>,
 *   boxes: Array<{id, label, parent, depth, x, y, width, height, box}>}} (outer boxes first)
 *   x, y are top-left corners; cx, cy centres.
 */
export function layoutGraph(graph, options = {}) {
  const o = { ...DEFAULTS, ...options };
  const measure = options.measure || ((t, k) => defaultMeasure(t, k, o));
  let nodes = (graph && graph.nodes) || [];
  let groups = graph && graph.boxes;
  if (!Array.isArray(groups)) ({ nodes, boxes: groups } = boxesFromScopes(nodes));
  const ids = new Set(nodes.map((n) => String(n.id)));

  // Keep only groups that (transitively) contain a drawn node.
  const groupById = new Map(groups.map((g) => [String(g.id), g]));
  const used = new Set();
  for (const n of nodes) {
    let p = n.parent;
    while (p != null && groupById.has(String(p)) && !used.has(String(p))) {
      used.add(String(p));
      p = groupById.get(String(p)).parent;
    }
  }
  const liveGroups = groups.filter((g) => used.has(String(g.id)));
  const liveIds = new Set(liveGroups.map((g) => String(g.id)));
  // Boxes live in dagre's node namespace too; a box may share its name with a node (the
  // container's module-named output node), so box keys are prefixed.
  const BOX = (id) => "\u0001box:" + id;

  const g = new dagre.graphlib.Graph({ compound: true, multigraph: false });
  g.setGraph({
    rankdir: o.rankdir, nodesep: o.nodesep, ranksep: o.ranksep, edgesep: o.edgesep,
    marginx: o.marginx, marginy: o.marginy,
  });
  g.setDefaultEdgeLabel(() => ({}));

  const info = new Map();
  for (const n of nodes) {
    const lines = nodeLines(n);
    // collapsed containers carry an expand toggle on their left: reserve room for it
    const extra = n.collapsed ? 2 * o.toggleRoom : 0;
    const w = Math.min(o.maxNodeWidth + extra, Math.max(o.minNodeWidth,
      Math.ceil(Math.max(measure(lines.title, "title"), measure(lines.sub, "sub")) + 2 * o.padX + extra)));
    const id = String(n.id);
    info.set(id, { lines, node: n });
    g.setNode(id, { width: w, height: o.nodeHeight });
  }
  for (const grp of liveGroups) g.setNode(BOX(grp.id), {});
  for (const grp of liveGroups) {
    if (grp.parent != null && liveIds.has(String(grp.parent))) g.setParent(BOX(grp.id), BOX(grp.parent));
  }
  for (const n of nodes) {
    if (n.parent != null && liveIds.has(String(n.parent))) g.setParent(String(n.id), BOX(n.parent));
  }
  const edges = [];
  const seen = new Set();
  for (const [s, t] of edgePairs(graph && graph.edges)) {
    if (s === t || !ids.has(s) || !ids.has(t)) continue;
    const key = s + "\u0000" + t;
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push([s, t]);
    g.setEdge(s, t);
  }

  if (nodes.length) dagre.layout(g);

  const outNodes = nodes.map((n) => {
    const id = String(n.id);
    const d = g.node(id);
    return {
      id, node: n, lines: info.get(id).lines,
      width: d.width, height: d.height, cx: d.x, cy: d.y, x: d.x - d.width / 2, y: d.y - d.height / 2,
    };
  });
  const depthOf = (grp) => {
    let d = 0;
    let p = grp.parent;
    while (p != null && liveIds.has(String(p))) { d += 1; p = groupById.get(String(p)).parent; }
    return d;
  };
  const outGroups = liveGroups.map((grp) => {
    const d = g.node(BOX(grp.id)) || {};
    const width = d.width || 0;
    const height = d.height || 0;
    return {
      id: String(grp.id), label: grp.label ?? String(grp.id), parent: grp.parent ?? null, depth: depthOf(grp),
      box: grp, width, height, x: (d.x || 0) - width / 2, y: (d.y || 0) - height / 2,
    };
  }).sort((a, b) => a.depth - b.depth);
  const outEdges = edges.map(([s, t]) => ({
    source: s, target: t, points: ((g.edge(s, t) || {}).points || []).map((p) => ({ x: p.x, y: p.y })),
  }));
  const gg = g.graph();
  return { width: gg.width || 0, height: gg.height || 0, nodes: outNodes, edges: outEdges, boxes: outGroups };
}

/** SVG path data for an edge polyline, smoothed with quadratic curves through midpoints. */
export function edgePath(points) {
  if (!points || points.length === 0) return "";
  const f = (v) => Math.round(v * 10) / 10;
  if (points.length < 3) return "M" + points.map((p) => f(p.x) + "," + f(p.y)).join("L");
  let d = "M" + f(points[0].x) + "," + f(points[0].y);
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const q = points[i + 1];
    const mx = (p.x + q.x) / 2;
    const my = (p.y + q.y) / 2;
    d += "Q" + f(p.x) + "," + f(p.y) + " " + f(i === points.length - 2 ? q.x : mx) + "," + f(i === points.length - 2 ? q.y : my);
  }
  return d;
}

/** Bounding box of laid out nodes, boxes and edge polylines. */
export function bounds(lay) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const b of [...lay.nodes, ...lay.boxes]) {
    x0 = Math.min(x0, b.x); y0 = Math.min(y0, b.y);
    x1 = Math.max(x1, b.x + b.width); y1 = Math.max(y1, b.y + b.height);
  }
  for (const e of lay.edges || []) {
    for (const p of e.points) {
      x0 = Math.min(x0, p.x - 2); y0 = Math.min(y0, p.y - 2);
      x1 = Math.max(x1, p.x + 2); y1 = Math.max(y1, p.y + 2);
    }
  }
  if (!isFinite(x0)) return { x: 0, y: 0, width: 0, height: 0 };
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}
