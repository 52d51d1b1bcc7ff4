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
import { PROTOCOL, DEFAULT_SELECTION, pickNext, computeMessage, metricsSource, isCurrent, pairText, withSpectrum } from "./pick.js";

const TRAITS = ["graph", "selection", "status", "estimate", "block", "coupling_map", "spectrum", "run", "exported"];

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
    applyCurrency();
    return next;
  };
  const compute = (sel) => {
    // a probes / CI field the user is fixing blocks the compute (it would use a stale value)
    if (sel.mode !== "exact" && toolbar.invalid()) return;
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
    onCancel() { send({ type: "cancel", sent_at: Date.now() }); },
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
      graph.setCollapsed(collapsed, name);      // the toggled container stays put on screen
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
  const exportNote = h("div", { class: "hx-export-note", "data-hx-export-result": "", hidden: true, "aria-live": "polite" });
  root.append(
    toolbar.el,
    replay.el,
    h("div", { class: "hx-main" }, graph.el, h("div", { class: "hx-side" }, metrics.el, block.el)),
    map.el,
    spectrum.el,
    status.el,
    exportNote);
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
    toolbar.setLimits(g && g.limits);
    collapsed = g && Array.isArray(g.nodes) ? defaultCollapsed(g) : new Set();
    graph.setGraph(g, collapsed);
    graph.setSelection(selection());
  }
  const applyMetrics = () => metrics.update(withSpectrum(metricsSource(get("estimate"), get("block")), get("spectrum")));
  // Panels of another pair than the current pick say so (and Export leaves them out).
  const now = () => {
    const sel = selection();
    const pick = sel.v != null ? `the current pick is ${pairText(sel.v, sel.w ?? "…", sel.space)}` : "no pair is picked now";
    const m = metricsSource(get("estimate"), get("block"));
    const b = get("block");
    const sp = get("spectrum");
    return {
      metrics: !m || isCurrent(m, sel),
      block: !b || !b.parts || isCurrent(b, sel),
      spectrum: !sp || !Object.keys(sp).length || isCurrent(sp, sel),
      text: (what) => `From an earlier pick: ${what}; ${pick}.`,
      m, b, sp,
    };
  };
  const applyCurrency = () => {
    const c = now();
    metrics.setCurrent(c.metrics, c.m ? c.text(pairText(c.m.v, c.m.w, c.m.space)) : "");
    block.setCurrent(c.block, c.b ? c.text(pairText(c.b.v, c.b.w, c.b.space)) : "");
    spectrum.setCurrent(c.spectrum, c.sp ? c.text(`the local spectrum of ${c.sp.group ?? c.sp.node}`) : "");
  };
  const applyStatus = () => {
    const st = get("status") || {};
    status.update(st);
    toolbar.setStatus(st);
    spectrum.setStatus(st);
    map.setRunning(st.state === "running" && st.kind === "map");
  };

  const handlers = {
    "change:graph": () => sched.schedule("graph", applyGraph),
    "change:selection": () => { sched.schedule("selection", () => applySelection(selection())); sched.schedule("currency", applyCurrency); },
    "change:status": () => sched.schedule("status", applyStatus),
    "change:estimate": () => { sched.schedule("metrics", applyMetrics); sched.schedule("currency", applyCurrency); },
    "change:block": () => {
      sched.schedule("block", () => block.setBlock(get("block")));
      sched.schedule("metrics", applyMetrics);
      sched.schedule("currency", applyCurrency);
    },
    "change:coupling_map": () => sched.schedule("map", () => map.setMap(get("coupling_map"))),
    "change:spectrum": () => {
      sched.schedule("spectrum", () => spectrum.setSpectrum(get("spectrum")));
      sched.schedule("metrics", applyMetrics);
      sched.schedule("currency", applyCurrency);
    },
    "change:run": () => sched.schedule("run", () => replay.setRun(get("run"))),
    "change:exported": () => sched.schedule("exported", applyExported),
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

  // Export: the graph (SVG) and the current panels (PNG) go to the kernel, which writes them
  // next to the notebook (the `exported` trait says where), and to the browser's downloads.
  let exportSeq = 0;
  async function exportAll() {
    const c = now();
    const sel = selection();
    const st = get("status") || {};
    const stamp = new Date().toISOString().slice(0, 19).replace("T", " ");
    const m = c.metrics ? c.m : null;
    const pair = m ? pairText(m.v, m.w, m.space) : c.block && c.b && c.b.parts ? pairText(c.b.v, c.b.w, c.b.space) : "";
    const how = !m ? "" : m.source === "exact" ? "exact" : `streamed · ${m.probes ?? 0}${m.budget ? `/${m.budget}` : ""} probes${m.done ? "" : " (running)"}`;
    const left = [!c.metrics && c.m ? "metrics" : "", !c.block ? "block" : ""].filter(Boolean);
    const title = pair ? `hessexplore · ${pair}` : "hessexplore";
    const subtitle = [how, st.state && st.state !== "idle" ? `last job ${st.state}` : "", stamp,
        left.length ? `(${left.join(" and ")} of an earlier pick left out)` : ""].filter(Boolean).join(" · ");
    exportNote.setAttribute("data-hx-export-title", `${title}\n${subtitle}`);
    const canvas = panelsCanvas({
      root, title, subtitle,
      metrics: c.metrics ? metrics.rows() : [],
      block: c.block ? block.exportParts() : null,
      mapCanvas: map.canvas(),
      mapLegend: map.legend(),
    });
    const tag = stamp.replace(/[-: ]/g, "").replace(/^(\d{8})(\d{6})$/, "$1-$2");
    const files = [];
    const svg = graph.exportSVG();
    if (svg) files.push({ name: `hessexplore-graph-${tag}.svg`, mime: "image/svg+xml", blob: new Blob([svg], { type: "image/svg+xml" }) });
    try {
      files.push({ name: `hessexplore-panels-${tag}.png`, mime: "image/png", blob: await canvasToBlob(canvas) });
    } catch (err) {
      showExport({ error: `the PNG could not be encoded (${err.message})`, files: [] });
    }
    for (const f of files) download(root, f.blob, f.name);
    exportSeq += 1;
    const buffers = await Promise.all(files.map((f) => f.blob.arrayBuffer()));
    showExport({ pending: true, names: files.map((f) => f.name) });
    model.send({ protocol: PROTOCOL, type: "export", seq: exportSeq, files: files.map((f) => ({ name: f.name, mime: f.mime })) },
      undefined, buffers);
  }
  function showExport(x) {
    exportNote.hidden = false;
    exportNote.classList.toggle("hx-error", !!(x && x.error));
    if (x.pending) { exportNote.textContent = `Exporting ${x.names.join(", ")} … (also in your browser's downloads)`; return; }
    if (x.error) { exportNote.textContent = `Export: ${x.error}. The files are in your browser's downloads.`; return; }
    const names = (x.files || []).map((f) => String(f).split(/[\\/]/).pop());
    exportNote.textContent = `Saved ${names.join(" and ")} in ${x.dir} (next to the notebook; also in your browser's downloads).`;
    exportNote.title = (x.files || []).join("\n");
  }
  const applyExported = () => {
    const x = get("exported");
    if (x && typeof x === "object" && Object.keys(x).length && x.seq === exportSeq) showExport(x);
  };

  // initial state
  applyGraph();
  applySelection(selection());
  applyStatus();
  applyMetrics();
  block.setBlock(get("block"));
  map.setMap(get("coupling_map"));
  spectrum.setSpectrum(get("spectrum"));
  replay.setRun(get("run"));
  applyCurrency();

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
