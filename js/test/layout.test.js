import { test } from "node:test";
import assert from "node:assert/strict";
import { layoutGraph, edgePath, edgePairs, shortLabel, nodeLines, bounds, shapeText } from "../src/layout.js";
import { visibleGraph } from "../src/collapse.js";
import { RESIDUAL_MLP, ATTENTION, DEEP_RESIDUAL } from "../harness/sample-graphs.js";

function overlap(a, b) {
  return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
}
function inside(p, b, eps = 0.5) {
  return p.x > b.x + eps && p.x < b.x + b.width - eps && p.y > b.y + eps && p.y < b.y + b.height - eps;
}

test("every node gets a box, top to bottom along edges, no overlaps", () => {
  for (const graph of [RESIDUAL_MLP, ATTENTION]) {
    const lay = layoutGraph(graph);
    assert.equal(lay.nodes.length, graph.nodes.length);
    const byId = new Map(lay.nodes.map((n) => [n.id, n]));
    for (const n of lay.nodes) {
      assert.ok(n.width >= 72 && n.height > 0);
      assert.ok(Number.isFinite(n.x) && Number.isFinite(n.y));
      assert.ok(n.x >= 0 && n.y >= 0 && n.x + n.width <= lay.width + 1e-6 && n.y + n.height <= lay.height + 1e-6);
    }
    for (const [s, t] of graph.edges) assert.ok(byId.get(s).cy < byId.get(t).cy, `${s} above ${t}`);
    for (let i = 0; i < lay.nodes.length; i++)
      for (let j = i + 1; j < lay.nodes.length; j++)
        assert.ok(!overlap(lay.nodes[i], lay.nodes[j]), `${lay.nodes[i].id} overlaps ${lay.nodes[j].id}`);
  }
});

test("edge polylines start and end on the node borders and avoid other nodes", () => {
  const lay = layoutGraph(RESIDUAL_MLP);
  const byId = new Map(lay.nodes.map((n) => [n.id, n]));
  assert.equal(lay.edges.length, RESIDUAL_MLP.edges.length);
  for (const e of lay.edges) {
    assert.ok(e.points.length >= 2);
    const a = byId.get(e.source), b = byId.get(e.target);
    const p0 = e.points[0], p1 = e.points[e.points.length - 1];
    assert.ok(Math.abs(p0.y - (a.y + a.height)) < 1 || Math.abs(p0.x - a.x) < 1 || Math.abs(p0.x - a.x - a.width) < 1, "starts on source border");
    assert.ok(Math.abs(p1.y - b.y) < 1 || Math.abs(p1.x - b.x) < 1 || Math.abs(p1.x - b.x - b.width) < 1, "ends on target border");
    for (const n of lay.nodes) {
      if (n.id === e.source || n.id === e.target) continue;
      for (const p of e.points) assert.ok(!inside(p, n), `edge ${e.source}->${e.target} crosses ${n.id}`);
    }
  }
  // the skip connection inp -> add is routed (bends) rather than a straight line through blocks.0.f
  const skip = lay.edges.find((e) => e.source === "inp" && e.target === "blocks.0");
  assert.ok(skip.points.length > 2);
});

test("groups from scopes enclose their members and nest", () => {
  const lay = layoutGraph(RESIDUAL_MLP);
  const gid = new Map(lay.boxes.map((g) => [g.id, g]));
  assert.deepEqual([...gid.keys()].sort(), ["blocks.0", "blocks.0.f", "blocks.1", "blocks.1.f", "blocks.2", "blocks.2.f"]);
  for (const n of lay.nodes) {
    for (const s of n.node.scope) {
      const g = gid.get(s);
      assert.ok(n.x >= g.x - 1e-6 && n.x + n.width <= g.x + g.width + 1e-6 && n.y >= g.y - 1e-6 && n.y + n.height <= g.y + g.height + 1e-6, `${n.id} in ${s}`);
    }
  }
  assert.equal(gid.get("blocks.1").depth, 0);
  assert.equal(gid.get("blocks.1.f").depth, 1);
  // parents drawn before children
  const order = lay.boxes.map((g) => g.id);
  assert.ok(order.indexOf("blocks.1") < order.indexOf("blocks.1.f"));
  // a node named after its own box (the block's output) is inside that box
  const out = lay.nodes.find((n) => n.id === "blocks.1");
  const box = gid.get("blocks.1");
  assert.ok(out.y + out.height <= box.y + box.height && out.y >= box.y);
});

test("layout of a collapsed visible graph", () => {
  const vis = visibleGraph(DEEP_RESIDUAL, ["blocks.3", "blocks.4"]);
  const lay = layoutGraph(vis);
  const ids = lay.nodes.map((n) => n.id);
  assert.ok(ids.includes("blocks.3") && ids.includes("blocks.4"));
  assert.ok(!lay.boxes.some((g) => g.id === "blocks.3"));
  const b3 = lay.nodes.find((n) => n.id === "blocks.3");
  const b4 = lay.nodes.find((n) => n.id === "blocks.4");
  assert.ok(b3.cy < b4.cy);
});

test("empty graph, measure hook, helpers", () => {
  const lay = layoutGraph({ nodes: [], edges: [] });
  assert.equal(lay.nodes.length, 0);
  assert.deepEqual(bounds(lay), { x: 0, y: 0, width: 0, height: 0 });
  const wide = layoutGraph({ nodes: [{ id: "a", op: "Linear", shape: [4] }], edges: [] }, { measure: (t) => 10 * t.length });
  assert.equal(wide.nodes[0].width, 10 * "Linear · 4".length + 2 * 18);
  assert.deepEqual(edgePairs([["a", "b"], { source: "b", target: "c" }]), [["a", "b"], ["b", "c"]]);
  assert.equal(shortLabel("blocks.0.f.1", "blocks.0.f"), "1");
  assert.equal(shortLabel("add", "blocks.0"), "add");
  assert.deepEqual(nodeLines({ id: "blocks.0.f.0", parent: "blocks.0.f", op: "Linear", shape: [16] }), { title: "0", sub: "Linear · 16" });
  assert.equal(shapeText([4, 8, 8]), "4×8×8");
  assert.equal(shapeText([]), "scalar");
  assert.equal(edgePath([]), "");
  assert.match(edgePath([{ x: 0, y: 0 }, { x: 0, y: 10 }]), /^M0,0L0,10$/);
  assert.match(edgePath([{ x: 0, y: 0 }, { x: 5, y: 5 }, { x: 0, y: 10 }]), /^M0,0Q5,5 0,10$/);
});

test("self-loops and duplicate edges are ignored", () => {
  const lay = layoutGraph({ nodes: [{ id: "a" }, { id: "b" }], edges: [["a", "a"], ["a", "b"], ["a", "b"], ["a", "zz"]] });
  assert.equal(lay.edges.length, 1);
});

test("bounds cover nodes, boxes and routed edges", () => {
  const lay = layoutGraph(ATTENTION);
  const b = bounds(lay);
  for (const n of lay.nodes) assert.ok(n.x >= b.x && n.x + n.width <= b.x + b.width + 1e-9);
  for (const e of lay.edges) for (const p of e.points) assert.ok(p.x >= b.x && p.x <= b.x + b.width && p.y >= b.y && p.y <= b.y + b.height);
});
