// Collapse / expand container modules of a model graph.
//
// Pure: no DOM. A *container* is any module name that appears in some node's
// `scope` (the enclosing container modules, outermost first). Collapsing a
// container replaces all of its member nodes by one node whose id is the
// container name; it stands for the container's output alias (the node whose
// `aliases` include the container name) and edges are re-wired to it.

import { edgePairs } from "./layout.js";


/**
 * Index the containers of a graph.
 * @returns {Map<string, {name, type, parent, scope: string[], depth, members: string[],
 *   alias: string|null, exit: string|null, params: number}>}
 *   `scope` = enclosing containers of the container itself (outermost first);
 *   `members` = node ids inside (topological order as given); `alias` = the container's output
 *   node: the node whose id is the name, else the one whose `aliases` include it (null when
 *   none, e.g. a container that is never called as a unit);
 *   `exit` = the representative node (alias, else the last member feeding a node outside).
 */
export function containersOf(graph) {
  const nodes = (graph && graph.nodes) || [];
  const modules = new Map(((graph && graph.modules) || []).map((m) => [String(m.name), m]));
  const out = new Map();
  nodes.forEach((n) => {
    const scope = Array.isArray(n.scope) ? n.scope.map(String) : [];
    scope.forEach((name, i) => {
      let c = out.get(name);
      if (!c) {
        // a module called again appears as "<name>@<k>" in scopes; its type is the module's
        const m = modules.get(name) || modules.get(name.split("@")[0]) || {};
        c = {
          name, type: m.type ? String(m.type) : "", parent: i > 0 ? scope[i - 1] : null,
          scope: scope.slice(0, i), depth: i, members: [], alias: null, exit: null,
          params: Number.isFinite(m.params) ? m.params : null,
        };
        out.set(name, c);
      }
      c.members.push(String(n.id));
    });
  });
  // The container's output node: the node named after it (module-named nodes: the primary
  // name of a node is the outermost container returning it), else the node aliasing it.
  for (const n of nodes) {
    const c = out.get(String(n.id));
    if (c) c.alias = String(n.id);
  }
  for (const n of nodes) {
    for (const a of n.aliases || []) {
      const c = out.get(String(a));
      if (c && c.alias === null) c.alias = String(n.id);
    }
  }
  const succ = new Map();
  for (const [s, t] of edgePairs(graph && graph.edges)) {
    if (!succ.has(s)) succ.set(s, []);
    succ.get(s).push(t);
  }
  const byId = new Map(nodes.map((n) => [String(n.id), n]));
  for (const c of out.values()) {
    if (c.params === null) c.params = c.members.reduce((acc, id) => acc + (Number(byId.get(id).params) || 0), 0);
    if (c.alias !== null) { c.exit = c.alias; continue; }
    const inside = new Set(c.members);
    let exit = null;
    for (const id of c.members) if ((succ.get(id) || []).some((t) => !inside.has(t))) exit = id;
    c.exit = exit ?? c.members[c.members.length - 1] ?? null;
  }
  return out;
}

/** The outermost collapsed container in a node's scope, or null. */
function collapsedOwner(scope, collapsed) {
  for (const name of scope || []) if (collapsed.has(String(name))) return String(name);
  return null;
}

/**
 * The visible graph for a set of collapsed containers.
 * @param {object} graph protocol graph JSON
 * @param {Iterable<string>} collapsed container names (names inside another collapsed one are ignored)
 * @param {{boxAll?: boolean}} [options] boxAll: also box containers without an output alias
 * @returns {{nodes: object[], edges: string[][], boxes: object[], rep: Map<string,string>,
 *   collapsed: Set<string>}}
 *   nodes: original node objects extended with `parent` (innermost expanded group or null);
 *   a collapsed container is {id: name, label: name, op: type, kind: "collapsed", collapsed: true,
 *   target: alias node id or null, addressable, shape, numel, params, members: count, scope, aliases,
 *   parent}. rep maps every original node id to the id of the visible node standing for it.
 */
export function visibleGraph(graph, collapsed = [], { boxAll = false } = {}) {
  const nodes = (graph && graph.nodes) || [];
  const cons = containersOf(graph);
  const col = new Set([...collapsed].map(String).filter((c) => cons.has(c)));
  const byId = new Map(nodes.map((n) => [String(n.id), n]));
  const rep = new Map();
  const vis = [];
  const emitted = new Set();
  // Containers that are never called as a unit (no output alias, e.g. a ModuleList) get no
  // box of their own: their members sit in the nearest boxed ancestor.
  const boxed = (name) => !col.has(name) && (boxAll || cons.get(name).alias !== null);
  const innermostExpanded = (scope) => {
    for (let i = scope.length - 1; i >= 0; i--) if (boxed(String(scope[i]))) return String(scope[i]);
    return null;
  };
  for (const n of nodes) {
    const id = String(n.id);
    const scope = Array.isArray(n.scope) ? n.scope.map(String) : [];
    const owner = collapsedOwner(scope, col);
    if (owner === null) {
      rep.set(id, id);
      vis.push({ ...n, id, parent: innermostExpanded(scope) });
      continue;
    }
    rep.set(id, owner);
    if (emitted.has(owner)) continue;
    emitted.add(owner);
    const c = cons.get(owner);
    const target = c.alias;
    const t = byId.get(c.exit) || {};
    vis.push({
      id: owner, label: owner, op: c.type || "module", kind: "collapsed", collapsed: true,
      target, addressable: target !== null && (byId.get(target) || {}).addressable !== false,
      shape: t.shape, numel: t.numel, params: c.params, members: c.members.length,
      scope: c.scope, aliases: target !== null ? [...((byId.get(target) || {}).aliases || [])] : [],
      parent: innermostExpanded(c.scope),
    });
  }
  const edges = [];
  const seen = new Set();
  for (const [s, t] of edgePairs(graph && graph.edges)) {
    const a = rep.get(s);
    const b = rep.get(t);
    if (a === undefined || b === undefined || a === b) continue;
    const key = a + "\u0000" + b;
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push([a, b]);
  }
  // Expanded containers that still hold a visible node become group boxes.
  const boxes = [];
  for (const c of cons.values()) {
    if (!boxed(c.name) || collapsedOwner(c.scope, col) !== null) continue;
    boxes.push({
      id: c.name, label: c.name, type: c.type, parent: innermostExpanded(c.scope),
      params: c.params, members: c.members.length, alias: c.alias,
    });
  }
  const effective = new Set([...col].filter((c) => collapsedOwner(cons.get(c).scope, col) === null));
  return { nodes: vis, edges, boxes, rep, collapsed: effective };
}

/** Toggle one container in a collapsed set (returns a new Set). */
export function toggleCollapsed(collapsed, name) {
  const s = new Set(collapsed);
  if (s.has(name)) s.delete(name);
  else s.add(name);
  return s;
}

/**
 * The shape of a container, for spotting repeated structure: its module type and the set of
 * operations inside it (types of its member nodes). Names play no part, so `blocks.3`,
 * `encoder_layer_3` and ResNet's `layer3` are all recognised; the set (not the sequence or
 * the count) lets a stage whose first block also downsamples match the others.
 */
export function containerShape(c, byId) {
  const ops = new Set(c.members.map((id) => String((byId.get(id) || {}).op || "")));
  return [c.type, ...[...ops].sort()].join("\u0001");
}

/**
 * Groups of repeated sibling containers: two or more containers in the same enclosing
 * container with the same shape (see containerShape) and at least two members each.
 * @returns {string[][]} lists of container names (graph order), outermost groups first
 */
export function repeatedSiblings(graph) {
  const cons = containersOf(graph);
  const nodes = (graph && graph.nodes) || [];
  const byId = new Map(nodes.map((n) => [String(n.id), n]));
  const first = new Map(nodes.map((n, i) => [String(n.id), i]));
  const buckets = new Map();
  for (const c of cons.values()) {
    if (c.members.length < 2) continue;
    const key = [c.parent ?? "", containerShape(c, byId)].join("\u0000");
    if (!buckets.has(key)) buckets.set(key, { depth: c.depth, names: [] });
    buckets.get(key).names.push(c.name);
  }
  const pos = (name) => first.get(cons.get(name).members[0]);
  return [...buckets.values()]
    .filter((b) => b.names.length >= 2)
    .sort((a, b) => a.depth - b.depth || pos(a.names[0]) - pos(b.names[0]))
    .map((b) => b.names.sort((x, y) => pos(x) - pos(y)));
}

/**
 * Default collapse policy for deep nets. Small graphs (≤ maxNodes nodes) are drawn in full.
 * Otherwise collapse repeated sibling blocks (blocks.0..blocks.N of one type), outermost
 * repetition first, then, while still too many nodes are visible, the addressable container
 * that hides the most nodes.
 * @returns {Set<string>}
 */
export function defaultCollapsed(graph, { maxNodes = 40 } = {}) {
  const nodes = (graph && graph.nodes) || [];
  const col = new Set();
  if (nodes.length <= maxNodes) return col;
  const cons = containersOf(graph);
  const count = () => visibleGraph(graph, col).nodes.length;
  for (const names of repeatedSiblings(graph)) {
    if (names.some((n) => collapsedOwner(cons.get(n).scope, col) !== null)) continue;
    names.forEach((n) => col.add(n));
    if (count() <= maxNodes) return col;
  }
  // Still too many: collapse the container that hides the most visible nodes, preferring
  // addressable ones (with an output alias) over bare ModuleLists.
  for (let guard = 0; guard < cons.size; guard++) {
    const vis = visibleGraph(graph, col);
    if (vis.nodes.length <= maxNodes) break;
    let best = null;
    for (const c of cons.values()) {
      if (col.has(c.name) || collapsedOwner(c.scope, col) !== null) continue;
      const saved = new Set(c.members.map((id) => vis.rep.get(id))).size - 1;
      if (saved < 1) continue;
      const key = [c.alias !== null ? 1 : 0, saved, c.depth];
      if (!best || key[0] > best.key[0] || (key[0] === best.key[0] && (key[1] > best.key[1] || (key[1] === best.key[1] && key[2] > best.key[2])))) best = { name: c.name, key };
    }
    if (!best) break;
    col.add(best.name);
  }
  return col;
}

/**
 * The name to send for a visible node: a collapsed container's name when it has an output
 * alias, the node id otherwise; null when the node cannot be picked in that space. In
 * parameter space a node is a group when it owns parameters or when its name is one of the
 * session's parameter groups (`groups`): e.g. an attention module whose weights are used by the
 * function nodes drawn inside it (its output node itself counts none).
 */
export function pickName(visNode, space = "activation", groups = null) {
  if (!visNode) return null;
  if (space === "parameter") {
    const id = String(visNode.id);
    return (Number(visNode.params) || 0) > 0 || (groups && groups.has(id)) ? id : null;
  }
  if (visNode.collapsed) return visNode.addressable ? String(visNode.id) : null;
  return visNode.addressable === false ? null : String(visNode.id);
}
