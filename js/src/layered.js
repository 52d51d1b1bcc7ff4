// A small, fast layered (Sugiyama-style) layout for one level of the nested layout.
//
// Pure: no DOM. dagre spends 10–40 ms even on a 10-node level (its general machinery);
// the levels of a model graph are small and nearly chains, so a plain version does:
// longest-path ranks, dummy nodes on long edges, barycentre ordering sweeps, and x by
// averaging a left- and a right-packed placement around the neighbours' mean (both keep the
// minimum spacing, so their mean does too). Cost is linear in nodes + edge length per sweep.

/**
 * @param {Array<[string, {width: number, height: number}]>} items
 * @param {Array<[string, string]>} edges  (between item ids; cycles are tolerated)
 * @param {{nodesep: number, ranksep: number, marginx?: number, marginy?: number,
 *   top?: string|null, bottom?: string|null}} o  top / bottom: ids of port items that must
 *   sit above / below everything else
 * @returns {{width, height, pos: Map<string, {x, y}>, edges: Map<string, Array<{x, y}>>}}
 *   pos: centres; edges keyed "a\0b": polyline from a's bottom to b's top
 */
export function layered(items, edges, o) {
  const mx = o.marginx || 0;
  const my = o.marginy || 0;
  const size = new Map(items);
  const ids = items.map(([id]) => id);
  const index = new Map(ids.map((id, i) => [id, i]));
  const es = [];
  const seen = new Set();
  for (const [a, b] of edges) {
    if (a === b || !size.has(a) || !size.has(b)) continue;
    const k = a + "\u0000" + b;
    if (!seen.has(k)) { seen.add(k); es.push([a, b]); }
  }
  // topological order (Kahn, ties by input order); nodes left on cycles follow in input order
  const preds = new Map(ids.map((id) => [id, []]));
  const succs = new Map(ids.map((id) => [id, []]));
  for (const [a, b] of es) { succs.get(a).push(b); preds.get(b).push(a); }
  const indeg = new Map(ids.map((id) => [id, preds.get(id).length]));
  const topo = [];
  const ready = ids.filter((id) => indeg.get(id) === 0);
  const done = new Set();
  while (topo.length < ids.length) {
    if (!ready.length) {
      const next = ids.find((id) => !done.has(id));   // break a cycle
      ready.push(next);
    }
    ready.sort((a, b) => index.get(a) - index.get(b));
    const v = ready.shift();
    if (done.has(v)) continue;
    done.add(v);
    topo.push(v);
    for (const w of succs.get(v)) {
      indeg.set(w, indeg.get(w) - 1);
      if (indeg.get(w) === 0 && !done.has(w)) ready.push(w);
    }
  }
  const pos = new Map(topo.map((id, i) => [id, i]));
  const fwd = es.filter(([a, b]) => pos.get(a) < pos.get(b));     // back edges only get drawn
  // ranks: longest path; sources pulled down next to their first successor
  const rank = new Map(ids.map((id) => [id, 0]));
  const fp = new Map(ids.map((id) => [id, []]));
  const fs = new Map(ids.map((id) => [id, []]));
  for (const [a, b] of fwd) { fp.get(b).push(a); fs.get(a).push(b); }
  for (const v of topo) for (const u of fp.get(v)) rank.set(v, Math.max(rank.get(v), rank.get(u) + 1));
  for (let i = topo.length - 1; i >= 0; i--) {
    const v = topo[i];
    if (fp.get(v).length || !fs.get(v).length || v === o.top) continue;
    rank.set(v, Math.max(0, Math.min(...fs.get(v).map((w) => rank.get(w))) - 1));
  }
  let maxRank = 0;
  for (const v of ids) if (v !== o.bottom) maxRank = Math.max(maxRank, rank.get(v));
  if (o.top != null && size.has(o.top)) {
    for (const v of ids) if (v !== o.top) rank.set(v, rank.get(v) + 1);
    rank.set(o.top, 0);
    maxRank += 1;
  }
  if (o.bottom != null && size.has(o.bottom)) rank.set(o.bottom, maxRank + 1);
  // layers with dummy nodes on edges longer than one rank
  const nR = Math.max(...ids.map((v) => rank.get(v)), 0) + 1;
  const layers = Array.from({ length: nR }, () => []);
  const W = new Map(ids.map((id) => [id, size.get(id).width]));
  const H = new Map(ids.map((id) => [id, size.get(id).height]));
  const up = new Map(ids.map((id) => [id, []]));
  const down = new Map(ids.map((id) => [id, []]));
  for (const v of topo) layers[rank.get(v)].push(v);
  const chains = new Map();
  let dn = 0;
  for (const [a, b] of es) {
    const [s, t] = rank.get(a) <= rank.get(b) ? [a, b] : [b, a];
    const path = [s];
    for (let r = rank.get(s) + 1; r < rank.get(t); r++) {
      const d = "\u0003d" + (dn++);
      W.set(d, 2); H.set(d, 0); up.set(d, []); down.set(d, []);
      rank.set(d, r);
      layers[r].push(d);
      path.push(d);
    }
    path.push(t);
    for (let i = 0; i + 1 < path.length; i++) { down.get(path[i]).push(path[i + 1]); up.get(path[i + 1]).push(path[i]); }
    chains.set(a + "\u0000" + b, { path, reversed: s !== a });
  }
  // ordering: barycentre sweeps
  const order = new Map();
  const renumber = () => layers.forEach((L) => L.forEach((v, i) => order.set(v, i)));
  renumber();
  const sweep = (r, nb) => {
    const L = layers[r];
    const bc = new Map(L.map((v) => {
      const ns = nb.get(v);
      return [v, ns.length ? ns.reduce((a, u) => a + order.get(u), 0) / ns.length : order.get(v)];
    }));
    L.sort((a, b) => bc.get(a) - bc.get(b) || order.get(a) - order.get(b));
    L.forEach((v, i) => order.set(v, i));
  };
  for (let it = 0; it < 4; it++) {
    for (let r = 1; r < nR; r++) sweep(r, up);
    for (let r = nR - 2; r >= 0; r--) sweep(r, down);
  }
  // x: pack, then pull towards neighbours' mean with spacing kept
  const X = new Map();
  for (const L of layers) {
    let x = 0;
    for (const v of L) { X.set(v, x + W.get(v) / 2); x += W.get(v) + o.nodesep; }
  }
  const gap = (a, b) => (W.get(a) + W.get(b)) / 2 + (W.get(a) <= 2 && W.get(b) <= 2 ? 6 : o.nodesep);
  const place = (L, nb) => {
    if (!L.length) return;
    const want = L.map((v) => {
      const ns = nb.get(v);
      return ns.length ? ns.reduce((a, u) => a + X.get(u), 0) / ns.length : X.get(v);
    });
    const a = want.slice();
    for (let i = 1; i < L.length; i++) a[i] = Math.max(want[i], a[i - 1] + gap(L[i - 1], L[i]));
    const b = want.slice();
    for (let i = L.length - 2; i >= 0; i--) b[i] = Math.min(want[i], b[i + 1] - gap(L[i], L[i + 1]));
    L.forEach((v, i) => X.set(v, (a[i] + b[i]) / 2));
  };
  for (let it = 0; it < 6; it++) {
    for (let r = 1; r < nR; r++) place(layers[r], up);
    for (let r = nR - 2; r >= 0; r--) place(layers[r], down);
  }
  let x0 = Infinity;
  let x1 = -Infinity;
  for (const L of layers) for (const v of L) { x0 = Math.min(x0, X.get(v) - W.get(v) / 2); x1 = Math.max(x1, X.get(v) + W.get(v) / 2); }
  if (!Number.isFinite(x0)) { x0 = 0; x1 = 0; }
  // y: rank heights
  const Y = new Map();
  let y = my;
  const rankTop = [];
  for (let r = 0; r < nR; r++) {
    const hh = Math.max(0, ...layers[r].map((v) => H.get(v)));
    rankTop.push(y);
    for (const v of layers[r]) Y.set(v, y + hh / 2);
    y += hh + (r < nR - 1 ? o.ranksep : 0);
  }
  const height = y + my;
  const shift = mx - x0;
  const P = (v) => ({ x: X.get(v) + shift, y: Y.get(v) });
  const out = new Map(ids.map((id) => [id, P(id)]));
  const edgePts = new Map();
  for (const [k, { path, reversed }] of chains) {
    const pts = path.map((v, i) => {
      const p = P(v);
      if (i === 0) return { x: p.x, y: p.y + H.get(v) / 2 };
      if (i === path.length - 1) return { x: p.x, y: p.y - H.get(v) / 2 };
      return p;
    });
    edgePts.set(k, reversed ? pts.reverse() : pts);
  }
  return { width: x1 - x0 + 2 * mx, height, pos: out, edges: edgePts };
}
