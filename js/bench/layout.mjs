// Layout engines side by side, in one process, alternating: dagre's compound layout of the
// whole visible graph (layout.js, what the page used before) against the nested per-container
// layout (nested.js) cold (empty cache) and after a one-container toggle (warm cache).
// Prints medians and ratios.    node js/bench/layout.mjs [repeats]
import { resnetLike, vitLike } from "../harness/sample-graphs.js";
import { visibleGraph, toggleCollapsed } from "../src/collapse.js";
import { layoutGraph } from "../src/layout.js";
import { layoutNested } from "../src/nested.js";

const reps = Number(process.argv[2] || 5);
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = (fn) => { const t0 = performance.now(); fn(); return performance.now() - t0; };
for (const [name, g, toggle] of [["resnet-69", resnetLike(), "layer3.1"], ["vit-12", vitLike(), "encoder.layers.encoder_layer_5"],
  ["resnet-490", resnetLike({ blocks: 17 }), "layer3.8"]]) {
  const vis = visibleGraph(g, []);
  const visT = visibleGraph(g, toggleCollapsed(new Set(), toggle));
  const dag = [], cold = [], warm = [];
  for (let r = 0; r < reps; r++) {
    dag.push(time(() => layoutGraph(vis)));
    cold.push(time(() => layoutNested(vis)));
    const cache = new Map();
    layoutNested(vis, { cache });
    warm.push(time(() => layoutNested(visT, { cache })));
  }
  const [d, c, w] = [median(dag), median(cold), median(warm)];
  console.log(`${name.padEnd(11)} ${String(g.nodes.length).padStart(4)} nodes  dagre compound ${d.toFixed(0).padStart(5)} ms  ` +
    `nested cold ${c.toFixed(1).padStart(6)} ms (${(d / c).toFixed(0)}x)  toggle ${toggle} warm ${w.toFixed(1)} ms (${(d / w).toFixed(0)}x)`);
}
