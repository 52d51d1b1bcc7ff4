// Toolbar (space, mode, probe budget, target relative CI, Compute / Cancel / Export)
// and the job status line.

import { h } from "./dom.js";
import { formatDuration, toNumber } from "./codec.js";
import { checkProbes, checkRelCI, DEFAULT_LIMITS } from "./pick.js";

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
  let limits = DEFAULT_LIMITS;
  // text fields (not type=number: the browser would clamp, round or silently drop what was
  // typed); checked on change with the kernel's limits, the reason shown next to them
  const probes = h("input", { type: "text", inputmode: "numeric", "data-hx-control": "probes", "aria-label": "Probe budget", autocomplete: "off" });
  const relci = h("input", { type: "text", inputmode: "decimal", placeholder: "off", "data-hx-control": "rel_ci", "aria-label": "Target relative CI in percent", autocomplete: "off" });
  const fieldError = h("div", { class: "hx-field-error", "data-hx-field-error": "", role: "alert", hidden: true });
  const errors = new Map();
  const showErrors = () => {
    const msgs = [...errors.values()];
    fieldError.hidden = !msgs.length;
    fieldError.textContent = msgs.join(" ");
  };
  const mark = (input, key, check) => {
    input.setAttribute("aria-invalid", check.ok ? "false" : "true");
    input.classList.toggle("hx-invalid", !check.ok);
    if (check.ok) errors.delete(key); else errors.set(key, check.error);
    showErrors();
    return check.ok;
  };
  probes.addEventListener("change", () => {
    const c = checkProbes(probes.value, limits);
    if (mark(probes, "probes", c)) opts.onChange({ probes: c.value });
  });
  relci.addEventListener("change", () => {
    const c = checkRelCI(relci.value, limits);
    if (mark(relci, "rel_ci", c)) opts.onChange({ rel_ci: c.value });
  });
  const compute = h("button", { class: "hx-btn hx-primary", type: "button", "data-hx-action": "compute", title: "Compute the block for the picked pair", onclick: () => opts.onCompute() }, "Compute");
  const cancel = h("button", { class: "hx-btn hx-danger", type: "button", "data-hx-action": "cancel", title: "Cancel the running job", onclick: () => opts.onCancel() }, "Cancel");
  const exportBtn = h("button", { class: "hx-btn", type: "button", "data-hx-action": "export", title: "Download the graph (SVG) and the panels (PNG)", onclick: () => opts.onExport() }, "Export");
  const fieldProbes = h("label", { class: "hx-field", title: "Probe budget of a streaming estimate" }, h("span", { class: "hx-field-label" }, "probes"), probes);
  const fieldCI = h("label", { class: "hx-field", title: "Stop early when the relative 95% CI of every metric is below this (empty = use the whole budget)" },
    h("span", { class: "hx-field-label" }, "target CI ±"), relci, h("span", { class: "hx-unit" }, "%"));
  const el = h("div", { class: "hx-toolbar-wrap" },
    h("div", { class: "hx-toolbar" }, space.el, mode.el, fieldProbes, fieldCI, h("span", { class: "hx-spacer" }), compute, cancel, exportBtn),
    fieldError);
  cancel.disabled = true;

  return {
    el,
    setSelection(s) {
      sel = { ...sel, ...(s || {}) };
      space.set(sel.space === "parameter" ? "parameter" : "activation");
      mode.set(sel.mode === "exact" ? "exact" : "stream");
      if (document.activeElement !== probes && !errors.has("probes")) probes.value = sel.probes != null ? String(sel.probes) : "";
      if (document.activeElement !== relci && !errors.has("rel_ci")) {
        const r = toNumber(sel.rel_ci);
        relci.value = r !== null && r > 0 ? String(Math.round(r * 1000) / 10) : "";
      }
      const streaming = sel.mode !== "exact";
      probes.disabled = !streaming;
      relci.disabled = !streaming;
    },
    setStatus(st) { cancel.disabled = !(st && st.state === "running"); },
    /** The kernel's limits (graph.limits); fields are checked against them. */
    setLimits(l) {
      limits = { ...DEFAULT_LIMITS, ...(l || {}) };
      probes.title = `Probe budget: a whole number from ${limits.probes[0].toLocaleString("en-US")} to ${limits.probes[1].toLocaleString("en-US")}`;
    },
    /** The reason an input is invalid (a compute waits until it is fixed), or null. */
    invalid() {
      if (!errors.size) return null;
      fieldError.classList.remove("hx-flash");
      void fieldError.offsetWidth;
      fieldError.classList.add("hx-flash");
      return [...errors.values()].join(" ");
    },
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
      // where a cancel spent its time (page → kernel, kernel → worker stopped), for tests / benchmarks
      const lat = s.latency && typeof s.latency === "object" ? s.latency : null;
      el.setAttribute("data-hx-cancel-latency", lat ? `${lat.message_s ?? ""},${lat.worker_s ?? ""}` : "");
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
