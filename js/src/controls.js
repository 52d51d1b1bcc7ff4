// Toolbar (space, mode, probe budget, target relative CI, Compute / Cancel / Export)
// and the job status line.

import { h } from "./dom.js";
import { formatDuration, toNumber } from "./codec.js";

function segmented(name, options, onPick) {
  const el = h("div", { class: "hx-seg", role: "group", "aria-label": name });
  const btns = new Map();
  for (const [value, label, title] of options) {
    const b = h("button", { type: "button", "aria-pressed": "false", title, [`data-hx-${name}`]: value, onclick: () => onPick(value) }, label);
    btns.set(value, b);
    el.append(b);
  }
  return {
    el,
    set(value) { for (const [v, b] of btns) b.setAttribute("aria-pressed", v === value ? "true" : "false"); },
  };
}

/**
 * @param {{onChange(patch: object), onCompute(), onCancel(), onExport()}} opts
 * @returns {{el, setSelection(sel), setStatus(status), setCanCompute(ok: boolean), values(): object}}
 */
export function createToolbar(opts) {
  let sel = { space: "activation", mode: "stream", probes: 200, rel_ci: null };
  const space = segmented("space", [
    ["activation", "Activations", "Blocks between node outputs (activation space)"],
    ["parameter", "Parameters", "Blocks between parameter groups (parameter space)"],
  ], (v) => opts.onChange({ space: v }));
  const mode = segmented("mode", [
    ["exact", "Exact", "Dense block by batched Hessian-vector products"],
    ["stream", "Stream", "Streaming estimates with error bars as probes accumulate"],
  ], (v) => opts.onChange({ mode: v }));
  const probes = h("input", { type: "number", min: 1, max: 100000, step: 10, inputmode: "numeric", "data-hx-control": "probes", "aria-label": "Probe budget" });
  const relci = h("input", { type: "number", min: 0, max: 100, step: 0.5, placeholder: "off", "data-hx-control": "rel_ci", "aria-label": "Target relative CI in percent" });
  probes.addEventListener("change", () => {
    const v = Math.round(toNumber(probes.value) ?? 0);
    if (v >= 1) opts.onChange({ probes: v });
    else probes.value = String(sel.probes ?? "");
  });
  relci.addEventListener("change", () => {
    const raw = relci.value.trim();
    const v = toNumber(raw);
    if (raw === "" || v === null || v <= 0) { relci.value = ""; opts.onChange({ rel_ci: null }); }
    else opts.onChange({ rel_ci: Math.min(v, 100) / 100 });
  });
  const compute = h("button", { class: "hx-btn hx-primary", type: "button", "data-hx-action": "compute", title: "Compute the block for the picked pair", onclick: () => opts.onCompute() }, "Compute");
  const cancel = h("button", { class: "hx-btn hx-danger", type: "button", "data-hx-action": "cancel", title: "Cancel the running job", onclick: () => opts.onCancel() }, "Cancel");
  const exportBtn = h("button", { class: "hx-btn", type: "button", "data-hx-action": "export", title: "Download the graph (SVG) and the panels (PNG)", onclick: () => opts.onExport() }, "Export");
  const fieldProbes = h("label", { class: "hx-field", title: "Probe budget of a streaming estimate" }, h("span", { class: "hx-field-label" }, "probes"), probes);
  const fieldCI = h("label", { class: "hx-field", title: "Stop early when the relative 95% CI of every metric is below this (empty = use the whole budget)" },
    h("span", { class: "hx-field-label" }, "target CI ±"), relci, h("span", { class: "hx-unit" }, "%"));
  const el = h("div", { class: "hx-toolbar" }, space.el, mode.el, fieldProbes, fieldCI, h("span", { class: "hx-spacer" }), compute, cancel, exportBtn);
  cancel.disabled = true;

  return {
    el,
    setSelection(s) {
      sel = { ...sel, ...(s || {}) };
      space.set(sel.space === "parameter" ? "parameter" : "activation");
      mode.set(sel.mode === "exact" ? "exact" : "stream");
      if (document.activeElement !== probes) probes.value = sel.probes != null ? String(sel.probes) : "";
      if (document.activeElement !== relci) {
        const r = toNumber(sel.rel_ci);
        relci.value = r !== null && r > 0 ? String(Math.round(r * 1000) / 10) : "";
      }
      const streaming = sel.mode !== "exact";
      probes.disabled = !streaming;
      relci.disabled = !streaming;
    },
    setStatus(st) { cancel.disabled = !(st && st.state === "running"); },
    setCanCompute(ok) { compute.disabled = !ok; },
  };
}

const STATE_TEXT = { idle: "Idle", running: "Running", done: "Done", cancelled: "Cancelled", error: "Error" };

/** Status line: state, message, progress bar and elapsed time (ticking while running). */
export function createStatusLine() {
  const dot = h("span", { class: "hx-status-dot", "aria-hidden": "true" });
  const stateEl = h("span", { class: "hx-status-state" }, "Idle");
  const msg = h("span", { class: "hx-status-msg", "aria-live": "polite" }, "Pick a node for v, then one for w.");
  const bar = h("div", { class: "hx-progress-bar" });
  const progress = h("div", { class: "hx-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, bar);
  const elapsed = h("span", { class: "hx-elapsed", "data-hx-elapsed": "" });
  const el = h("div", { class: "hx-status", "data-hx-status": "idle" }, dot, stateEl, msg, progress, elapsed);
  let timer = null;
  let base = { elapsed: 0, at: 0 };

  const tick = () => { elapsed.textContent = formatDuration(base.elapsed + (performance.now() - base.at) / 1000); };
  const stop = () => { if (timer !== null) { clearInterval(timer); timer = null; } };

  return {
    el,
    update(st) {
      const s = st && typeof st === "object" ? st : {};
      const state = STATE_TEXT[s.state] ? s.state : "idle";
      el.setAttribute("data-hx-status", state);
      el.setAttribute("data-hx-job", s.job != null ? String(s.job) : "");
      el.setAttribute("data-hx-kind", s.kind ? String(s.kind) : "");
      stateEl.textContent = STATE_TEXT[state];
      const text = s.message ? String(s.message) : state === "idle" ? "Pick a node for v, then one for w." : "";
      msg.textContent = text;
      msg.title = text;
      const p = toNumber(s.progress);
      const pct = p === null ? (state === "done" ? 100 : 0) : Math.max(0, Math.min(100, p * 100));
      bar.style.width = pct.toFixed(1) + "%";
      progress.setAttribute("aria-valuenow", pct.toFixed(0));
      progress.style.visibility = state === "idle" ? "hidden" : "visible";
      base = { elapsed: toNumber(s.elapsed) ?? 0, at: performance.now() };
      if (state === "running") {
        tick();
        if (timer === null) timer = setInterval(tick, 200);
      } else {
        stop();
        elapsed.textContent = toNumber(s.elapsed) !== null && state !== "idle" ? formatDuration(s.elapsed) : "";
      }
    },
    destroy: stop,
  };
}
