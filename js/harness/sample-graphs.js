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

/**
 * A ResNet-like graph (torchvision's naming): stem, then stages `layer1`…`layerS`, each a
 * Sequential of `blocks` BasicBlocks (conv-bn-relu-conv-bn + add + relu; the first block of
 * stages 2… also has a `downsample` Sequential), then pool and fc. Names do not end in an
 * index at the stage level: a name-based collapse policy cannot group the stages.
 * With stages=4, blocks=2: 69 nodes; blocks can be raised to reach ~500 nodes.
 */
export function resnetLike({ stages = 4, blocks = 2, width = 8 } = {}) {
  const nodes = [node("x", "input", "input", [3, 32, 32])];
  const edges = [];
  const modules = [];
  let prev = "x";
  const chain = (ids, scope) => {
    for (const [id, op, shape, extra] of ids) {
      nodes.push(node(id, op, "module", shape, { scope, ...(extra || {}) }));
      edges.push([prev, id]);
      prev = id;
    }
  };
  chain([["conv1", "Conv2d", [width, 32, 32], { params: 27 * width }], ["bn1", "BatchNorm2d", [width, 32, 32], { params: 2 * width }],
    ["relu", "ReLU", [width, 32, 32]], ["maxpool", "MaxPool2d", [width, 16, 16]]], []);
  let c = width;
  let hw = 16;
  for (let s = 1; s <= stages; s++) {
    const L = `layer${s}`;
    modules.push({ name: L, type: "Sequential", parent: null, params: 0, children: [] });
    const cOut = s === 1 ? c : 2 * c;
    const hOut = s === 1 ? hw : hw / 2;
    for (let b = 0; b < blocks; b++) {
      const B = `${L}.${b}`;
      modules.push({ name: B, type: "BasicBlock", parent: L, params: 0, children: [] });
      const sh = [cOut, hOut, hOut];
      const entry = prev;
      const scope = [L, B];
      chain([[`${B}.conv1`, "Conv2d", sh, { params: 9 * cOut * (b === 0 ? c : cOut) }], [`${B}.bn1`, "BatchNorm2d", sh, { params: 2 * cOut }],
        [`${B}.relu`, "ReLU", sh], [`${B}.conv2`, "Conv2d", sh, { params: 9 * cOut * cOut }], [`${B}.bn2`, "BatchNorm2d", sh, { params: 2 * cOut }]], scope);
      const main = prev;
      let skip = entry;
      if (b === 0 && s > 1) {
        const D = `${B}.downsample`;
        modules.push({ name: D, type: "Sequential", parent: B, params: 0, children: [] });
        prev = entry;
        chain([[`${D}.0`, "Conv2d", sh, { params: c * cOut }], [`${D}.1`, "BatchNorm2d", sh, { params: 2 * cOut, aliases: [D] }]], [...scope, D]);
        skip = prev;
      }
      nodes.push(node(`${B}.add`, "add", "function", sh, { scope }));
      edges.push([main, `${B}.add`], [skip, `${B}.add`]);
      prev = `${B}.add`;
      chain([[B, "ReLU", sh, { aliases: b === blocks - 1 ? [L] : [] }]], scope);
    }
    c = cOut;
    hw = hOut;
  }
  chain([["avgpool", "AdaptiveAvgPool2d", [c, 1, 1]], ["flatten", "flatten", [c]], ["fc", "Linear", [10], { params: c * 10 + 10 }]], []);
  return { nodes, edges, modules, batch_size: 4, device: "cpu", dtype: "float32", groups: [] };
}

/**
 * A ViT-like encoder (torchvision's naming): `encoder.layers.encoder_layer_0`…`_{depth-1}`,
 * each LayerNorm → attention → add → LayerNorm → MLP (Linear, GELU, Linear) → add.
 */
export function vitLike({ depth = 12, dim = 16, tokens = 5 } = {}) {
  const sh = [tokens, dim];
  const nodes = [node("x", "input", "input", sh)];
  const edges = [];
  const modules = [{ name: "encoder", type: "Encoder", parent: null, params: 0, children: [] },
    { name: "encoder.layers", type: "Sequential", parent: "encoder", params: 0, children: [] }];
  let prev = "x";
  const add = (id, op, scope, extra) => { nodes.push(node(id, op, "module", sh, { scope, ...(extra || {}) })); edges.push([prev, id]); prev = id; };
  for (let i = 0; i < depth; i++) {
    const E = `encoder.layers.encoder_layer_${i}`;
    modules.push({ name: E, type: "EncoderBlock", parent: "encoder.layers", params: 0, children: [] });
    modules.push({ name: `${E}.mlp`, type: "MLPBlock", parent: E, params: 0, children: [] });
    const scope = ["encoder", "encoder.layers", E];
    const entry = prev;
    add(`${E}.ln_1`, "LayerNorm", scope, { params: 2 * dim });
    add(`${E}.self_attention`, "MultiheadAttention", scope, { params: 4 * dim * dim + 4 * dim });
    nodes.push(node(`${E}.add`, "add", "function", sh, { scope }));
    edges.push([prev, `${E}.add`], [entry, `${E}.add`]);
    prev = `${E}.add`;
    const mid = prev;
    add(`${E}.ln_2`, "LayerNorm", scope, { params: 2 * dim });
    const ms = [...scope, `${E}.mlp`];
    add(`${E}.mlp.0`, "Linear", ms, { params: 4 * dim * dim + 4 * dim });
    add(`${E}.mlp.1`, "GELU", ms);
    add(`${E}.mlp.3`, "Linear", ms, { params: 4 * dim * dim + dim, aliases: [`${E}.mlp`] });
    nodes.push(node(E, "add", "function", sh, { scope }));
    edges.push([prev, E], [mid, E]);
    prev = E;
  }
  add("encoder.ln", "LayerNorm", ["encoder"], { params: 2 * dim, aliases: ["encoder"] });
  add("heads", "Linear", [], { params: dim * 10 + 10 });
  return { nodes, edges, modules, batch_size: 4, device: "cpu", dtype: "float32", groups: [] };
}
