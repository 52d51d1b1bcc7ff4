// Sample `graph` trait values (widget protocol v1).
//
// RESIDUAL_MLP, MLP, ATTENTION, DEEP_RESIDUAL are real outputs of
// hessexplore.graph.ModelGraph.to_json() (generated into graphs.js by dump_graphs.py).
// residualMLP() synthesises the same format for any depth (tests of the collapse policy),
// optionally with an enclosing container that is never called as a unit (no output node).

export { RESIDUAL_MLP, MLP, ATTENTION, DEEP_RESIDUAL } from "./graphs.js";

function node(id, op, kind, shape, { scope = [], aliases = [], params = 0 } = {}) {
  return {
    id, label: id, op, kind, shape, numel: shape.reduce((a, b) => a * b, 1),
    scope, aliases, addressable: true, params,
  };
}

/**
 * Like hessexplore.models.ResidualMLP: node `blocks.i` is the residual sum (module-named),
 * `blocks.i.f.k` the branch layers, `blocks.i.f` aliased on the branch output.
 * wrapper: also put everything under a never-called container of that name.
 */
export function residualMLP({ dIn = 8, width = 16, depth = 3, dOut = 3, norm = false, wrapper = null } = {}) {
  const lin = (a, b) => a * b + b;
  const top = wrapper ? [wrapper] : [];
  const nodes = [node("x", "input", "input", [dIn]), node("inp", "Linear", "module", [width], { params: lin(dIn, width) })];
  const edges = [["x", "inp"]];
  const modules = [];
  if (wrapper) modules.push({ name: wrapper, type: "ModuleList", parent: null, params: 0, children: [] });
  let prev = "inp";
  for (let i = 0; i < depth; i++) {
    const b = `blocks.${i}`;
    const f = `${b}.f`;
    const layers = [["Linear", lin(width, width)], ...(norm ? [["LayerNorm", 2 * width]] : []), ["ReLU", 0]];
    const params = layers.reduce((a, [, p]) => a + p, 0);
    modules.push({ name: b, type: "ResidualBlock", parent: wrapper, params, children: [f] });
    modules.push({ name: f, type: "Sequential", parent: b, params, children: layers.map((_, k) => `${f}.${k}`) });
    let cur = prev;
    layers.forEach(([op, p], k) => {
      const id = `${f}.${k}`;
      nodes.push(node(id, op, "module", [width], { scope: [...top, b, f], aliases: k === layers.length - 1 ? [f] : [], params: p }));
      edges.push([cur, id]);
      cur = id;
    });
    nodes.push(node(b, "add", "function", [width], { scope: [...top, b] }));
    edges.push([prev, b], [cur, b]);
    prev = b;
  }
  nodes.push(node("head", "Linear", "module", [dOut], { params: lin(width, dOut) }));
  edges.push([prev, "head"]);
  return { nodes, edges, modules, batch_size: 4, device: "cpu", dtype: "float32", groups: [] };
}
