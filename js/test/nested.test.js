import { test } from "node:test";
import assert from "node:assert/strict";
import { layoutNested, BOX_PAD } from "../src/nested.js";
import { layered } from "../src/layered.js";
import { visibleGraph, defaultCollapsed, containersOf, toggleCollapsed } from "../src/collapse.js";
import { RESIDUAL_MLP, ATTENTION, DEEP_RESIDUAL, resnetLike, vitLike } from "../harness/sample-graphs.js";

const overlap = (a, b) => a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5 && a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5;
const inside = (a, b) => a.x >= b.x - 0.5 && a.y >= b.y - 0.5 && a.x + a.width <= b.x + b.width + 0.5 && a.y + a.height <= b.y + b.height + 0.5;

function checkLayout(vis, lay) {
  assert.equal(lay.nodes.length, vis.nodes.length);
  const byId = new Map(lay.nodes.map((n) => [n.id, n]));
  const boxes = new Map(lay.boxes.map((b) => [b.id, b]));
  // no two nodes overlap
  for (let i = 0; i < lay.nodes.length; i++) {
    for (let j = i + 1; j < lay.nodes.length; j++) {
      assert.ok(!overlap(lay.nodes[i], lay.nodes[j]), `${lay.nodes[i].id} overlaps ${lay.nodes[j].id}`);
    }
  }
  // every node sits in its box, every box in its parent box; sibling boxes do not overlap
  for (const n of vis.nodes) if (n.parent != null && boxes.has(n.parent)) assert.ok(inside(byId.get(String(n.id)), boxes.get(n.parent)), `${n.id} outside ${n.parent}`);
  for (const b of lay.boxes) if (b.parent != null) assert.ok(inside(b, boxes.get(b.parent)), `${b.id} outside ${b.parent}`);
  for (const b of lay.boxes) for (const c of lay.boxes) if (b.id < c.id && b.parent === c.parent) assert.ok(!overlap(b, c), `${b.id} overlaps ${c.id}`);
  // a node outside a box never sits inside it
  for (const n of lay.nodes) for (const b of lay.boxes) {
    const anc = [];
    for (let p = vis.nodes.find((x) => String(x.id) === n.id).parent; p != null; p = (boxes.get(p) || {}).parent) anc.push(p);
    if (!anc.includes(b.id)) assert.ok(!overlap(n, b), `${n.id} drawn inside box ${b.id}`);
  }
  // edges run from their source's bottom to their target's top
  assert.equal(lay.edges.length, new Set(vis.edges.map((e) => e.join(">"))).size);
  for (const e of lay.edges) {
    const s = byId.get(e.source);
    const t = byId.get(e.target);
    const p0 = e.points[0];
    const p1 = e.points[e.points.length - 1];
    assert.ok(e.points.length >= 2, `${e.source}->${e.target} has no path`);
    if (t.y > s.y) {
      assert.ok(Math.abs(p0.y - (s.y + s.height)) < 1 && p0.x >= s.x - 1 && p0.x <= s.x + s.width + 1, `${e.source}->${e.target} starts off its source`);
      assert.ok(Math.abs(p1.y - t.y) < 1 && p1.x >= t.x - 1 && p1.x <= t.x + t.width + 1, `${e.source}->${e.target} ends off its target`);
    }
  }
}

test("layered: ranks follow edges, one node per slot, long edges bend through dummies", () => {
  const items = ["a", "b", "c", "d"].map((id) => [id, { width: 60, height: 30 }]);
  const lay = layered(items, [["a", "b"], ["b", "c"], ["c", "d"], ["a", "d"]], { nodesep: 10, ranksep: 20 });
  const y = (id) => lay.pos.get(id).y;
  assert.ok(y("a") < y("b") && y("b") < y("c") && y("c") < y("d"));
  const skip = lay.edges.get("a\u0000d");
  assert.equal(skip.length, 4, "two dummies on a 3-rank edge");
  for (const p of skip.slice(1, -1)) assert.ok(Math.abs(p.x - lay.pos.get("b").x) >= 30 + 10 - 1e-9 || p.y !== y("b"), "the skip does not run through b");
  // a cycle does not hang and every node is placed
  const cyc = layered(items, [["a", "b"], ["b", "a"], ["c", "d"]], { nodesep: 10, ranksep: 20 });
  assert.equal(cyc.pos.size, 4);
});

test("nested layout of real and synthetic graphs: nothing overlaps, nodes in their boxes, edges attached", () => {
  for (const g of [RESIDUAL_MLP, ATTENTION, DEEP_RESIDUAL, resnetLike(), vitLike({ depth: 3 })]) {
    for (const col of [[], [...defaultCollapsed(g, { maxNodes: 20 })]]) {
      const vis = visibleGraph(g, col);
      checkLayout(vis, layoutNested(vis));
    }
  }
});

test("nested layout: edges enter a box at its top and leave at its bottom", () => {
  const vis = visibleGraph(RESIDUAL_MLP, []);
  const lay = layoutNested(vis);
  const box = lay.boxes.find((b) => b.id === "blocks.1");
  // the skip edge blocks.0 -> blocks.1 (the residual sum) enters blocks.1's box through its top edge
  const skip = lay.edges.find((e) => e.source === "blocks.0" && e.target === "blocks.1");
  const crossing = skip.points.findIndex((p) => p.y > box.y + 0.5);
  assert.ok(crossing > 0);
  const q = skip.points[crossing - 1];
  assert.ok(q.y <= box.y + BOX_PAD.top + 1, "the edge is at the top of the box when it gets in");
});

test("nested layout caches per container: toggling one container lays out only its own ancestry", () => {
  const g = resnetLike({ blocks: 6 });
  const cache = new Map();
  const full = layoutNested(visibleGraph(g, []), { cache });
  assert.equal(full.stats.cached, 0);
  const again = layoutNested(visibleGraph(g, []), { cache });
  assert.equal(again.stats.cached, again.stats.levels, "an unchanged graph comes from the cache");
  assert.deepEqual(again.nodes.map((n) => [n.id, n.x, n.y]), full.nodes.map((n) => [n.id, n.x, n.y]));
  const one = layoutNested(visibleGraph(g, toggleCollapsed(new Set(), "layer3.2")), { cache });
  // recomputed: layer3 (holds the collapsed node) and the root; everything else reused
  assert.equal(one.stats.levels - one.stats.cached, 2);
});

test("a 500-node graph lays out fully (layout time is measured by js/bench/expand.mjs, not asserted)", () => {
  const g = resnetLike({ blocks: 17 });
  assert.ok(g.nodes.length >= 480 && g.nodes.length <= 520, String(g.nodes.length));
  assert.ok(containersOf(g).size > 60);
  const vis = visibleGraph(g, []);
  const lay = layoutNested(vis);
  assert.equal(lay.nodes.length, g.nodes.length);
  assert.ok(lay.boxes.length > 60);
});

test("transformers (real graphs from the capture layer): layers and attention are collapsible containers", async () => {
  const { TRANSFORMER_ENCODER: enc, GPT2: gpt } = await import("../harness/graphs.js");
  const { pickName } = await import("../src/collapse.js");
  // nn.TransformerEncoder: the two layers repeat (by shape) and start collapsed; attention is a container inside
  assert.deepEqual([...defaultCollapsed(enc)], ["enc.layers.0", "enc.layers.1"]);
  const encCons = containersOf(enc);
  assert.equal(encCons.get("enc.layers.0.self_attn").type, "MultiheadAttention");
  assert.deepEqual(encCons.get("enc.layers.0.self_attn").scope, ["enc", "enc.layers.0"]);
  // HF GPT-2: h.0 / h.1 blocks with attn and mlp inside, all addressable by their module names
  const gc = containersOf(gpt);
  for (const c of ["transformer.h.0", "transformer.h.0.attn", "transformer.h.0.mlp"]) assert.ok(gc.get(c).alias !== null, c);
  assert.deepEqual([...defaultCollapsed(gpt)], ["transformer.h.0", "transformer.h.1"]);
  const col = visibleGraph(gpt, defaultCollapsed(gpt));
  const h0 = col.nodes.find((n) => n.id === "transformer.h.0");
  assert.ok(h0.collapsed && pickName(h0, "activation") === "transformer.h.0" && pickName(h0, "parameter") === "transformer.h.0");
  // expanding h.0 shows attn and mlp as boxes whose members can be picked; layouts are sound
  const open = visibleGraph(gpt, ["transformer.h.1"]);
  assert.ok(open.boxes.some((b) => b.id === "transformer.h.0.attn") && open.boxes.some((b) => b.id === "transformer.h.0.mlp"));
  for (const [g, c] of [[enc, []], [enc, defaultCollapsed(enc)], [gpt, []], [gpt, ["transformer.h.1"]], [gpt, defaultCollapsed(gpt)]]) {
    const vis = visibleGraph(g, c);
    checkLayout(vis, layoutNested(vis));
  }
});
