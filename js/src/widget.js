// hessexplore explorer: anywidget front end (protocol v1, see docs/widget-protocol.md).
//
// render({model, el}) builds the view, subscribes to the traits and returns a cleanup
// function. Durable state lives in traits; commands go out as custom messages.

import css from "./styles.css";
import { h, frameScheduler } from "./dom.js";
import { defaultCollapsed, toggleCollapsed } from "./collapse.js";
import { createGraphPanel } from "./graphview.js";
import { createMetricsPanel } from "./metrics.js";
import { createBlockPanel } from "./blockpanel.js";
import { createMapPanel } from "./mappanel.js";
import { createSpectrumPanel } from "./spectrumpanel.js";
import { createReplayBar } from "./replaybar.js";
import { createToolbar, createStatusLine } from "./controls.js";
import { download, panelsCanvas, canvasToBlob } from "./exporter.js";
import { PROTOCOL, DEFAULT_SELECTION, pickNext, computeMessage, metricsSource } from "./pick.js";

const TRAITS = ["graph", "selection", "status", "estimate", "block", "coupling_map", "spectrum", "run"];

function render({ model, el }) {
  const root = h("div", { class: "hx-root", "data-lm-suppress-shortcuts": "true", tabindex: "-1" });
  root.append(h("style", {}, css));
  const sched = frameScheduler();
  const get = (name) => model.get(name);
  const selection = () => ({ ...DEFAULT_SELECTION, ...(get("selection") || {}) });
  let collapsed = new Set();
  let lastGraph = null;

  const send = (msg) => model.send({ protocol: PROTOCOL, ...msg });
  const setSelection = (patch) => {
    const next = { ...selection(), ...patch };
    model.set("selection", next);
    model.save_changes();
    applySelection(next);
    return next;
  };
  const compute = (sel) => {
    const msg = computeMessage(sel);
    if (msg) model.send(msg);
  };

  // ---- panels ----
  const toolbar = createToolbar({
    onChange(patch) {
      const cur = selection();
      // names of one space do not address the other: start the pick over
      if (patch.space && patch.space !== cur.space) patch = { ...patch, v: null, w: null };
      setSelection(patch);
    },
    onCompute() {
      const sel = selection();
      if (!sel.v) return;
      compute(sel.w ? sel : setSelection({ w: sel.v }));
    },
    onCancel() { send({ type: "cancel" }); },
    onExport() { exportAll(); },
  });
  // the replay bar colours the graph (created first: the graph reports hidden groups to it)
  const replay = createReplayBar({ root, onChange(view) { graph.setReplay(view); } });
  const graph = createGraphPanel({
    root,
    onPick(name) {
      const { patch, compute: go } = pickNext(selection(), name);
      const next = setSelection(patch);
      if (go) compute(next);
    },
    onToggle(name) {
      collapsed = toggleCollapsed(collapsed, name);
      graph.setCollapsed(collapsed);
    },
    onExpand(names) {
      collapsed = new Set([...collapsed].filter((c) => !names.includes(c)));
      graph.setCollapsed(collapsed);
    },
    onSelf() {
      const sel = selection();
      if (sel.v) compute(setSelection({ w: sel.v }));
    },
    onClear() { setSelection({ v: null, w: null }); },
    onReplayHidden(groups) { replay.setHidden(groups); },
  });
  const metrics = createMetricsPanel();
  const block = createBlockPanel({ root, onSpectrum: (group) => send({ type: "spectrum", group }) });
  const map = createMapPanel({
    root,
    onRequest() {
      const sel = selection();
      send({ type: "coupling_map", space: sel.space, nodes: graph.isCollapsedView() ? graph.visibleNames() : null });
    },
    onPick(v, w, andCompute) {
      const next = setSelection({ v, w });
      if (andCompute) compute(next);
    },
  });
  const spectrum = createSpectrumPanel({ root });
  const status = createStatusLine();
  root.append(
    toolbar.el,
    replay.el,
    h("div", { class: "hx-main" }, graph.el, h("div", { class: "hx-side" }, metrics.el, block.el)),
    map.el,
    spectrum.el,
    status.el);
  el.appendChild(root);

  // ---- trait -> view ----
  function applySelection(sel) {
    toolbar.setSelection(sel);
    toolbar.setCanCompute(!!sel.v);
    graph.setSelection(sel);
    graph.setSpace(sel.space);
    block.setSelection(sel);
    map.setSelection(sel);
  }
  function applyGraph() {
    const g = get("graph");
    if (g === lastGraph) return;
    lastGraph = g;
    collapsed = g && Array.isArray(g.nodes) ? defaultCollapsed(g) : new Set();
    graph.setGraph(g, collapsed);
    graph.setSelection(selection());
  }
  const applyMetrics = () => metrics.update(metricsSource(get("estimate"), get("block")));
  const applyStatus = () => {
    const st = get("status") || {};
    status.update(st);
    toolbar.setStatus(st);
    spectrum.setStatus(st);
    map.setRunning(st.state === "running" && st.kind === "map");
  };

  const handlers = {
    "change:graph": () => sched.schedule("graph", applyGraph),
    "change:selection": () => sched.schedule("selection", () => applySelection(selection())),
    "change:status": () => sched.schedule("status", applyStatus),
    "change:estimate": () => sched.schedule("metrics", applyMetrics),
    "change:block": () => {
      sched.schedule("block", () => block.setBlock(get("block")));
      sched.schedule("metrics", applyMetrics);
    },
    "change:coupling_map": () => sched.schedule("map", () => map.setMap(get("coupling_map"))),
    "change:spectrum": () => sched.schedule("spectrum", () => spectrum.setSpectrum(get("spectrum"))),
    "change:run": () => sched.schedule("run", () => replay.setRun(get("run"))),
  };
  for (const [ev, fn] of Object.entries(handlers)) model.on(ev, fn);

  // keyboard: Escape clears the pick (notebook shortcuts are suppressed on the root)
  root.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      setSelection({ v: null, w: null });
      e.stopPropagation();
      return;
    }
    // Keys typed into the widget's own controls (slider arrows, select, number fields) stay
    // here: the notebook's handlers further up would otherwise cancel their default action.
    const t = e.target;
    if (t && t.closest && t.closest("input, select, textarea")) e.stopPropagation();
  });

  // narrow output areas stack the panels
  const ro = typeof ResizeObserver === "function" ? new ResizeObserver(() => {
    const narrow = root.clientWidth < 820;
    if (narrow !== root.classList.contains("hx-narrow")) {
      root.classList.toggle("hx-narrow", narrow);
      sched.schedule("block", () => block.setBlock(get("block")));
    }
  }) : null;
  if (ro) ro.observe(root);

  // JupyterLab switches themes live (body data-jp-theme-*): canvases and replay colours pick
  // their palette when drawn, so draw them again
  const redrawTheme = () => {
    replay.refresh();
    sched.schedule("block", () => block.setBlock(get("block")));
    sched.schedule("map", () => map.setMap(get("coupling_map")));
    sched.schedule("spectrum", () => spectrum.setSpectrum(get("spectrum")));
  };
  const themeObs = typeof MutationObserver === "function" && typeof document !== "undefined" && document.body
    ? new MutationObserver(() => { setTimeout(redrawTheme, 50); setTimeout(redrawTheme, 600); }) : null;
  if (themeObs) themeObs.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });

  async function exportAll() {
    const sel = selection();
    const svg = graph.exportSVG();
    if (svg) download(root, new Blob([svg], { type: "image/svg+xml" }), "hessexplore-graph.svg");
    const st = get("status") || {};
    const canvas = panelsCanvas({
      root,
      title: sel.v ? `hessexplore · H[${sel.v}, ${sel.w ?? sel.v}]` : "hessexplore",
      subtitle: [metrics.subtitle() || sel.space, st.state ? `job ${st.state}` : "", new Date().toISOString().slice(0, 19).replace("T", " ")].filter(Boolean).join(" · "),
      metrics: metrics.rows(),
      block: block.exportParts(),
      mapCanvas: map.canvas(),
    });
    try {
      download(root, await canvasToBlob(canvas), "hessexplore-panels.png");
    } catch (err) {
      console.error("hessexplore export:", err);
    }
  }

  // initial state
  applyGraph();
  applySelection(selection());
  applyStatus();
  applyMetrics();
  block.setBlock(get("block"));
  map.setMap(get("coupling_map"));
  spectrum.setSpectrum(get("spectrum"));
  replay.setRun(get("run"));

  return () => {
    for (const [ev, fn] of Object.entries(handlers)) model.off(ev, fn);
    sched.destroy();
    status.destroy();
    replay.destroy();
    metrics.destroy();
    graph.destroy();
    if (ro) ro.disconnect();
    if (themeObs) themeObs.disconnect();
    root.remove();
  };
}

export { TRAITS, PROTOCOL, metricsSource };
export default { render };
