// Replay bar: statistic selector, play/pause, checkpoint slider, step and losses, colour legend.
// Hidden until the `run` trait holds a run. The graph panel does the colouring.

import { h, add, clear, themeColors } from "./dom.js";
import { formatNumber, formatInt } from "./codec.js";
import { isDark, parseColor } from "./scale.js";
import {
  normalizeRun, replayStats, defaultStat, statRange, replayScale, gradientCss, clampIndex, valuesAt,
  checkpointAt, statLabel,
} from "./replay.js";

const PLAY_MS = 700;

/**
 * @param {{root: Element, onChange(view: {stat, label, index, step, values: Map, scale}|null)}} opts
 */
export function createReplayBar(opts) {
  let run = null;
  let stat = null;
  let index = 0;
  let timer = null;

  const name = h("span", { class: "hx-replay-name" });
  const select = h("select", { class: "hx-replay-stat", "data-hx-replay-stat": "", "aria-label": "Statistic to colour the graph by" });
  const play = h("button", {
    class: "hx-btn hx-small hx-replay-play", type: "button", "data-hx-action": "replay-play",
    "aria-label": "Play the checkpoints", "aria-pressed": "false", title: "Play / pause",
  }, "▶");
  const slider = h("input", {
    type: "range", min: 0, max: 0, step: 1, value: 0, class: "hx-replay-slider", "data-hx-replay-slider": "",
    "aria-label": "Checkpoint",
  });
  const stepEl = h("span", { class: "hx-replay-step", "data-hx-replay-step": "" });
  const lossEl = h("span", { class: "hx-replay-loss" });
  const lo = h("span", { class: "hx-replay-lo" });
  const hi = h("span", { class: "hx-replay-hi" });
  const ramp = h("span", { class: "hx-replay-ramp", "aria-hidden": "true" });
  const scaleNote = h("span", { class: "hx-replay-scale" });
  const legendLabel = h("span", { class: "hx-replay-legend-k" });
  const legend = h("span", { class: "hx-replay-legend", title: "One colour scale for every checkpoint of this statistic" }, legendLabel, lo, ramp, hi, scaleNote);
  const note = h("span", { class: "hx-replay-note" });
  const el = h("section", { class: "hx-replay", "data-hx-replay": "", hidden: true, "aria-label": "Checkpoint replay" },
    h("div", { class: "hx-replay-row" },
      h("span", { class: "hx-panel-title" }, "Replay"), name, select, play, slider, stepEl),
    h("div", { class: "hx-replay-row hx-replay-row2" }, lossEl, h("span", { class: "hx-spacer" }), note, legend));

  function dark() {
    const rgb = parseColor(themeColors(opts.root).bg);
    return !!rgb && isDark(rgb);
  }

  function stop() {
    if (timer !== null) { clearInterval(timer); timer = null; }
    play.textContent = "▶";
    play.setAttribute("aria-pressed", "false");
    play.setAttribute("aria-label", "Play the checkpoints");
  }
  function start() {
    if (!run) return;
    if (index >= run.steps.length - 1) setIndex(0);
    play.textContent = "❚❚";
    play.setAttribute("aria-pressed", "true");
    play.setAttribute("aria-label", "Pause");
    timer = setInterval(() => {
      if (!run || index >= run.steps.length - 1) { stop(); return; }
      setIndex(index + 1);
    }, PLAY_MS);
  }

  function emit() {
    if (!run) { opts.onChange(null); return; }
    const range = statRange(run, stat);
    const scale = replayScale(range, { dark: dark() });
    const cp = checkpointAt(run, index);
    stepEl.textContent = `step ${cp.step === null ? "—" : formatInt(cp.step)} · ${cp.index + 1}/${cp.count}`;
    const loss = [];
    if (cp.train !== null) loss.push(["train", cp.train]);
    if (cp.test !== null) loss.push(["test", cp.test]);
    clear(lossEl);
    if (loss.length) {
      add(lossEl, h("span", { class: "hx-muted" }, "loss "), ...loss.map(([k, v], i) => h("span", { "data-hx-replay-loss": k },
        i ? " · " : "", h("span", { class: "hx-muted" }, `${k} `), h("span", { class: "hx-mono" }, formatNumber(v, 4)))));
    } else add(lossEl, h("span", { class: "hx-muted" }, "no losses recorded"));
    legendLabel.textContent = `${statLabel(stat)}:`;
    lo.textContent = range.min === null ? "—" : formatNumber(range.min, 3);
    hi.textContent = range.max === null ? "—" : formatNumber(range.max, 3);
    ramp.style.background = gradientCss(scale);
    scaleNote.textContent = range.log ? "log scale" : "";
    opts.onChange({ stat, label: statLabel(stat), index: cp.index, step: cp.step, values: valuesAt(run, stat, cp.index), scale });
  }

  function setIndex(i) {
    index = clampIndex(run, i);
    slider.value = String(index);
    emit();
  }

  slider.addEventListener("input", () => { stop(); setIndex(Number(slider.value)); });
  select.addEventListener("change", () => { stat = select.value; emit(); });
  play.addEventListener("click", () => (timer === null ? start() : stop()));

  return {
    el,
    setRun(raw) {
      const r = normalizeRun(raw);
      stop();
      if (!r) {
        run = null;
        el.hidden = true;
        opts.onChange(null);
        return;
      }
      const same = run && run.name === r.name && run.steps.length === r.steps.length;
      run = r;
      el.hidden = false;
      name.textContent = `${r.name || "run"}${r.part && r.part !== "full" ? ` (${r.part})` : ""}`;
      name.title = `${r.groups.length} tracked groups · ${r.steps.length} checkpoints`;
      const stats = replayStats(r);
      if (!stat || !stats.some((s) => s.name === stat)) stat = defaultStat(r);
      clear(select);
      const groups = [["raw", stats.filter((s) => !s.normalized)], ["normalised", stats.filter((s) => s.normalized)]];
      for (const [label, list] of groups) {
        if (!list.length) continue;
        const og = h("optgroup", { label });
        for (const s of list) og.append(h("option", { value: s.name }, s.label));
        select.append(og);
      }
      select.value = stat;
      slider.max = String(r.steps.length - 1);
      slider.disabled = r.steps.length < 2;
      play.disabled = r.steps.length < 2;
      if (!same) index = 0;
      setIndex(index);
    },
    /** Say how many tracked groups are not drawn (inside collapsed blocks). */
    setHidden(hidden) {
      note.textContent = hidden && hidden.length ? `${hidden.length} tracked group${hidden.length > 1 ? "s" : ""} inside collapsed blocks` : "";
      note.title = hidden && hidden.length ? hidden.join(", ") : "";
    },
    /** Theme changed: recompute colours. */
    refresh() { if (run) emit(); },
    destroy: stop,
  };
}
