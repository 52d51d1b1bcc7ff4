import { test } from "node:test";
import assert from "node:assert/strict";
import { containersOf, visibleGraph, defaultCollapsed, repeatedSiblings, toggleCollapsed, pickName, containerShape } from "../src/collapse.js";
import * as SYN from "../harness/sample-graphs.js";
import { RESIDUAL_MLP, MLP, ATTENTION, DEEP_RESIDUAL, residualMLP } from "../harness/sample-graphs.js";

test("containers of a real graph: members, output node, scope, params", () => {
  const c = containersOf(RESIDUAL_MLP);
  assert.deepEqual([...c.keys()].sort(), ["blocks.0", "blocks.0.f", "blocks.1", "blocks.1.f", "blocks.2", "blocks.2.f"]);
  const b0 = c.get("blocks.0");
  assert.equal(b0.alias, "blocks.0", "module-named node is the block's output");
  assert.equal(b0.type, "ResidualBlock");
  assert.deepEqual(b0.scope, []);
  assert.deepEqual(b0.members, ["blocks.0.f.0", "blocks.0.f.1", "blocks.0"]);
  assert.equal(c.get("blocks.0.f").alias, "blocks.0.f.1", "Sequential aliased on its last layer");
  assert.deepEqual(c.get("blocks.0.f").scope, ["blocks.0"]);
  assert.equal(b0.params, 272);
  assert.equal(containersOf(ATTENTION).size, 0);
  // MLP: blocks.i = Sequential(Linear, ReLU), output aliased on the ReLU
  const m = containersOf(MLP);
  assert.equal(m.get("blocks.0").alias, "blocks.0.1");
});

test("collapsing a block: one node for its output, edges rewired, no self-loops, no duplicates", () => {
  const vis = visibleGraph(RESIDUAL_MLP, ["blocks.1"]);
  const ids = vis.nodes.map((n) => n.id);
  assert.equal(ids.filter((i) => i === "blocks.1").length, 1);
  for (const gone of ["blocks.1.f.0", "blocks.1.f.1"]) assert.ok(!ids.includes(gone));
  assert.equal(vis.nodes.length, RESIDUAL_MLP.nodes.length - 3 + 1);
  const b1 = vis.nodes.find((n) => n.id === "blocks.1");
  assert.equal(b1.collapsed, true);
  assert.equal(b1.target, "blocks.1");
  assert.equal(b1.op, "ResidualBlock");
  assert.equal(b1.parent, null);
  assert.equal(b1.addressable, true);
  assert.equal(pickName(b1), "blocks.1");
  assert.deepEqual(b1.shape, [16]);
  assert.equal(b1.members, 3);
  assert.equal(vis.rep.get("blocks.1.f.0"), "blocks.1");
  assert.equal(vis.rep.get("blocks.0"), "blocks.0");
  const keys = vis.edges.map((e) => e.join("->"));
  assert.equal(new Set(keys).size, keys.length, "no duplicates");
  assert.ok(vis.edges.every(([a, b]) => a !== b), "no self-loops");
  // blocks.0 -> blocks.1.f.0 and blocks.0 -> blocks.1 merge into one edge
  assert.equal(keys.filter((k) => k === "blocks.0->blocks.1").length, 1);
  assert.ok(keys.includes("blocks.1->blocks.2.f.0"));
  assert.ok(keys.includes("blocks.1->blocks.2"));
  const gids = vis.boxes.map((g) => g.id);
  assert.ok(!gids.includes("blocks.1") && !gids.includes("blocks.1.f"));
  assert.ok(gids.includes("blocks.0") && gids.includes("blocks.0.f"));
  assert.equal(vis.boxes.find((b) => b.id === "blocks.0.f").parent, "blocks.0");
});

test("expanded graph keeps every node and edge; unknown names ignored", () => {
  const vis = visibleGraph(RESIDUAL_MLP, ["nope"]);
  assert.equal(vis.nodes.length, RESIDUAL_MLP.nodes.length);
  assert.equal(vis.edges.length, RESIDUAL_MLP.edges.length);
  assert.equal(vis.nodes.find((n) => n.id === "blocks.0.f.0").parent, "blocks.0.f");
  assert.equal(vis.nodes.find((n) => n.id === "blocks.0").parent, "blocks.0");
  assert.equal(vis.nodes.find((n) => n.id === "x").parent, null);
  assert.equal(vis.collapsed.size, 0);
});

test("inner collapse keeps the outer box; nested collapse: the outermost wins", () => {
  let vis = visibleGraph(RESIDUAL_MLP, ["blocks.0.f"]);
  const f = vis.nodes.find((n) => n.id === "blocks.0.f");
  assert.equal(f.target, "blocks.0.f.1");
  assert.equal(f.parent, "blocks.0");
  assert.ok(vis.edges.some(([a, b]) => a === "blocks.0.f" && b === "blocks.0"));
  assert.ok(vis.edges.some(([a, b]) => a === "inp" && b === "blocks.0.f"));
  vis = visibleGraph(RESIDUAL_MLP, ["blocks.0", "blocks.0.f"]);
  assert.deepEqual([...vis.collapsed], ["blocks.0"]);
  assert.ok(!vis.nodes.some((n) => n.id === "blocks.0.f"));
});

test("a container never called as a unit: no box, collapsed it is not addressable", () => {
  const g = residualMLP({ depth: 2, wrapper: "layers" });
  const c = containersOf(g);
  assert.equal(c.get("layers").alias, null);
  assert.equal(c.get("layers").exit, "blocks.1");
  let vis = visibleGraph(g, []);
  assert.ok(!vis.boxes.some((b) => b.id === "layers"));
  assert.equal(vis.boxes.find((b) => b.id === "blocks.0").parent, null);
  assert.ok(visibleGraph(g, [], { boxAll: true }).boxes.some((b) => b.id === "layers"));
  vis = visibleGraph(g, ["layers"]);
  assert.deepEqual(vis.nodes.map((n) => n.id), ["x", "inp", "layers", "head"]);
  assert.deepEqual(vis.edges, [["x", "inp"], ["inp", "layers"], ["layers", "head"]]);
  const l = vis.nodes.find((n) => n.id === "layers");
  assert.equal(l.addressable, false);
  assert.equal(pickName(l), null);
});

test("module called twice: scope names with @k take the module's type", () => {
  const g = residualMLP({ depth: 1 });
  g.nodes.push({ id: "blocks.0@1", label: "blocks.0@1", op: "add", kind: "function", shape: [16], numel: 16, scope: ["blocks.0@1"], aliases: [], addressable: true, params: 0 });
  g.edges.push(["blocks.0", "blocks.0@1"]);
  const c = containersOf(g);
  assert.equal(c.get("blocks.0@1").type, "ResidualBlock");
  assert.equal(c.get("blocks.0@1").alias, "blocks.0@1");
});

test("default policy: small graphs stay expanded, deep nets collapse repeated blocks", () => {
  assert.equal(defaultCollapsed(RESIDUAL_MLP).size, 0);
  assert.equal(defaultCollapsed(ATTENTION).size, 0);
  assert.ok(DEEP_RESIDUAL.nodes.length > 40);
  const col = defaultCollapsed(DEEP_RESIDUAL);
  assert.deepEqual([...col].sort(), [...Array(12).keys()].map((i) => `blocks.${i}`).sort());
  const vis = visibleGraph(DEEP_RESIDUAL, col);
  assert.equal(vis.nodes.length, 3 + 12);
  assert.deepEqual(repeatedSiblings(RESIDUAL_MLP), [["blocks.0", "blocks.1", "blocks.2"]]);
  assert.deepEqual(repeatedSiblings(ATTENTION), []);
});

test("default policy falls back to the biggest containers when repetition is not enough", () => {
  const huge = residualMLP({ depth: 60, wrapper: "layers" });
  const col = defaultCollapsed(huge, { maxNodes: 40 });
  const vis = visibleGraph(huge, col);
  assert.ok(vis.nodes.length <= 40, `visible ${vis.nodes.length}`);
  assert.ok(col.has("layers"));
  // without an uncalled wrapper the 60 collapsed blocks stay (nothing addressable can hide them)
  const flat = residualMLP({ depth: 60 });
  assert.equal(visibleGraph(flat, defaultCollapsed(flat)).nodes.length, 63);
});

test("toggle and pick names", () => {
  let s = toggleCollapsed(new Set(), "blocks.0");
  assert.ok(s.has("blocks.0"));
  s = toggleCollapsed(s, "blocks.0");
  assert.equal(s.size, 0);
  assert.equal(pickName({ id: "relu", params: 0 }), "relu");
  assert.equal(pickName({ id: "relu", params: 0 }, "parameter"), null);
  assert.equal(pickName({ id: "fc", params: 10 }, "parameter"), "fc");
  assert.equal(pickName({ id: "size", addressable: false }), null);
  assert.equal(pickName(null), null);
});

test("repeated structure is found by shape, not by name: ResNet stages and ViT encoder layers", () => {
  const { resnetLike, vitLike } = SYN;
  const r = resnetLike();
  assert.equal(r.nodes.length, 70);
  const groups = repeatedSiblings(r);
  assert.deepEqual(groups[0], ["layer1", "layer2", "layer3", "layer4"], "stages group although layer2.0 also downsamples");
  assert.deepEqual(groups[1], ["layer1.0", "layer1.1"]);
  const col = defaultCollapsed(r);
  assert.deepEqual([...col], ["layer1", "layer2", "layer3", "layer4"]);
  assert.ok(visibleGraph(r, col).nodes.length <= 40);
  const v = vitLike();
  const names = Array.from({ length: 12 }, (_, i) => `encoder.layers.encoder_layer_${i}`);
  assert.deepEqual(repeatedSiblings(v)[0], names, "graph order, not string order (…_10 after …_9)");
  assert.deepEqual([...defaultCollapsed(v)], names);
  // different shapes never group: an MLP block and an attention block of one type name
  const mixed = structuredClone(v);
  for (const n of mixed.nodes) if (n.id === "encoder.layers.encoder_layer_3.mlp.1") n.op = "ReLU";
  assert.ok(!repeatedSiblings(mixed)[0].includes("encoder.layers.encoder_layer_3"));
});

test("containerShape ignores names and counts, keeps the module type and the kinds of operations", () => {
  const r = SYN.resnetLike();
  const cons = containersOf(r);
  const byId = new Map(r.nodes.map((n) => [n.id, n]));
  assert.equal(containerShape(cons.get("layer1.0"), byId), containerShape(cons.get("layer1.1"), byId));
  assert.notEqual(containerShape(cons.get("layer1.0"), byId), containerShape(cons.get("layer1"), byId));
});

test("parameter space: a node named like a parameter group is pickable even when it counts no parameters itself", () => {
  const n = { id: "enc.layers.0.self_attn", params: 0, addressable: true };
  assert.equal(pickName(n, "parameter"), null);
  assert.equal(pickName(n, "parameter", new Set(["enc.layers.0.self_attn"])), "enc.layers.0.self_attn");
  assert.equal(pickName({ id: "relu", params: 0 }, "parameter", new Set(["head"])), null);
});
