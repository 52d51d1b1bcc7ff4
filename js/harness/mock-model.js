// A fake anywidget model (get / set / on / off / save_changes / send) with a simulated
// kernel behind it: streaming estimates at ~10 Hz with shrinking stderr, exact blocks as
// binary Bufs (DataView, like anywidget delivers them), progressive coupling maps, cancel.
// Protocol: docs/widget-protocol.md (version 1).

export class MockModel {
  constructor(traits = {}) {
    this.traits = { ...traits };
    this.listeners = new Map();
    this.sent = [];
    this.saves = 0;
    this.kernel = null;
  }
  get(name) { return this.traits[name]; }
  set(name, value) {
    const old = this.traits[name];
    this.traits[name] = value;
    if (old !== value) this.emit(`change:${name}`, value);
  }
  save_changes() { this.saves += 1; }
  on(event, cb) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(cb);
  }
  off(event, cb) {
    if (!event) { this.listeners.clear(); return; }
    const set = this.listeners.get(event);
    if (!set) return;
    if (cb) set.delete(cb); else set.clear();
  }
  emit(event, ...args) {
    for (const cb of [...(this.listeners.get(event) || [])]) cb(...args);
  }
  send(msg) {
    this.sent.push(msg);
    if (this.kernel) this.kernel.handle(msg);
  }
}

// ---------- deterministic pseudo-random numbers ----------
function hashString(s) {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
  return h >>> 0;
}
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function gauss(r) {
  const u = Math.max(1e-12, r());
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
}

/** Binary Buf the way anywidget hands it to JS: a DataView over a (larger) ArrayBuffer. */
export function bufOf(array, shape, dtype = "float32") {
  const Ctor = dtype === "float64" ? Float64Array : dtype === "uint8" ? Uint8Array : Float32Array;
  const typed = array instanceof Ctor ? array : Ctor.from(array);
  const pad = 8;
  const ab = new ArrayBuffer(typed.byteLength + 2 * pad);
  new Uint8Array(ab, pad, typed.byteLength).set(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength));
  return { shape, dtype, data: new DataView(ab, pad, typed.byteLength) };
}

/** Eigenvalues of a symmetric n×n matrix (cyclic Jacobi), ascending. */
export function symEig(a, n) {
  const m = Float64Array.from(a);
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q] ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (m[q * n + q] - m[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = m[k * n + p], akq = m[k * n + q];
          m[k * n + p] = c * akp - s * akq;
          m[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = m[p * n + k], aqk = m[q * n + k];
          m[p * n + k] = c * apk - s * aqk;
          m[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => m[i * n + i]).sort((x, y) => x - y);
}

const METRIC_NAMES = ["resonance", "coupling", "stable_rank", "gn_gap", "norm_full", "norm_gn", "norm_tensor", "spectral_norm"];

/**
 * Simulated Python side. Options: tickMs (default 100 = 10 Hz), probesPerTick (10),
 * blockDelayMs (600), mapRowMs (120).
 */
export class MockKernel {
  constructor(model, options = {}) {
    this.model = model;
    this.o = { tickMs: 100, probesPerTick: 10, blockDelayMs: 600, mapRowMs: 120, ...options };
    this.job = 0;
    this.timer = null;
    this.startedAt = 0;
    this.active = null;
    model.kernel = this;
    if (!model.get("status")) this.setStatus({ state: "idle", message: "", job: 0, kind: "estimate", progress: 0, elapsed: 0 });
  }

  nodeInfo(name) {
    const g = this.model.get("graph") || { nodes: [] };
    const n = g.nodes.find((x) => x.id === name) || g.nodes.find((x) => (x.aliases || []).includes(name));
    return n || null;
  }
  dims(name, space) {
    if (space === "parameter") {
      const n = this.nodeInfo(name);
      const mod = ((this.model.get("graph") || {}).modules || []).find((m) => m.name === name);
      const p = (mod && mod.params) || (n && n.params) || 0;
      return Math.max(1, p);
    }
    const n = this.nodeInfo(name);
    return n ? n.numel : 16;
  }

  setStatus(patch) {
    const cur = this.model.get("status") || {};
    this.model.set("status", { ...cur, ...patch });
  }
  stop() {
    if (this.timer !== null) { clearInterval(this.timer); clearTimeout(this.timer); this.timer = null; }
  }
  elapsed() { return (performance.now() - this.startedAt) / 1000; }
  error(message) {
    this.stop();
    this.active = null;
    this.setStatus({ state: "error", message, progress: 0, elapsed: 0 });
  }

  handle(msg) {
    if (!msg || msg.protocol !== 1) return this.error(`unsupported protocol ${msg && msg.protocol}; expected 1`);
    switch (msg.type) {
      case "compute": return this.compute(msg);
      case "cancel": return this.cancel();
      case "coupling_map": return this.couplingMap(msg);
      case "spectrum": return this.spectrum(msg);
      default: return this.error(`unknown message type ${JSON.stringify(msg.type)}`);
    }
  }

  begin(kind, message) {
    this.stop();
    this.after = null;
    this.job += 1;
    this.startedAt = performance.now();
    this.active = { kind, job: this.job };
    this.setStatus({ state: "running", message, job: this.job, kind, progress: 0, elapsed: 0 });
    return this.job;
  }

  cancel() {
    this.after = null;
    if (!this.active) return;
    const { job } = this.active;
    this.stop();
    this.active = null;
    const est = this.model.get("estimate") || {};
    const probes = est.job === job ? est.probes : 0;
    this.setStatus({ state: "cancelled", message: `Cancelled after ${probes || 0} probes`, elapsed: this.elapsed() });
  }

  truth(v, w, space) {
    const r = rng(hashString(`${v}|${w}|${space}`));
    const diag = v === w;
    const R = diag ? 0.5 + 2 * r() : 0.02 + 0.8 * r();
    const C = diag ? 1 : Math.min(1.15, 0.1 + 0.9 * r());
    const gap = r() < 0.4 ? 1e-6 * r() : 0.05 + 2 * r();
    const gn = R / Math.sqrt(1 + gap * gap);
    return {
      resonance: R, coupling: C, stable_rank: 1 + 6 * r(), gn_gap: gap,
      norm_full: R, norm_gn: gn, norm_tensor: gn * gap, spectral_norm: R * (0.4 + 0.5 * r()),
      ...(diag ? { trace: R * (1.5 + r()) } : {}),
    };
  }

  /** The group of a diagonal pick's follow-up spectrum, or {message} (cf. Explorer.spectrum_group). */
  spectrumGroup(name, space) {
    if (space === "parameter") return { group: name };
    const n = this.nodeInfo(name);
    const mod = ((this.model.get("graph") || {}).modules || []).find((m) => m.name === name);
    if ((n && n.id === name && n.params > 0) || (mod && mod.params > 0)) return { group: name };
    return { group: null, message: `${name}${n && n.op ? ` (${n.op})` : ""} owns no parameters, so it has no local spectrum.` };
  }

  followUp(msg, job, space) {
    if (!msg.spectrum || msg.v !== msg.w) return;
    const { group, message } = this.spectrumGroup(msg.v, space);
    if (group === null) {
      this.model.set("spectrum", { job, node: msg.v, group: null, message, stats: {}, done: true, pending: false });
      return;
    }
    this.model.set("spectrum", { job, node: msg.v, group, pending: true, method: "auto", stats: {}, done: false });
    this.after = () => this.spectrum({ type: "spectrum", group, method: msg.spectrum_method || "auto", node: msg.v });
  }

  finish() {
    const next = this.after;
    this.after = null;
    if (next) setTimeout(next, 50);
  }

  compute(msg) {
    const { v, w } = msg;
    const space = msg.space === "parameter" ? "parameter" : "activation";
    if (typeof v !== "string" || typeof w !== "string") return this.error("compute needs string node names v and w");
    if (!this.nodeInfo(v) && !this.nodeInfo(w) && space === "activation") return this.error(`unknown node ${v}`);
    const mode = msg.mode === "exact" ? "exact" : "stream";
    const job = this.begin(mode === "exact" ? "block" : "estimate", `${mode === "exact" ? "Exact block" : "Streaming"} H[${v}, ${w}] (${space})`);
    this.followUp(msg, job, space);
    if (mode === "exact") return this.exact(job, v, w, space);
    const budget = Math.max(1, msg.probes | 0 || 200);
    const relci = typeof msg.rel_ci === "number" ? msg.rel_ci : null;
    const truth = this.truth(v, w, space);
    const r = rng(hashString(`${v}|${w}|${job}`));
    const names = Object.keys(truth);
    const sums = Object.fromEntries(names.map((k) => [k, 0]));
    const history = Object.fromEntries(names.map((k) => [k, []]));
    let probes = 0;
    const tick = () => {
      if (!this.active || this.active.job !== job) return;
      const step = Math.min(this.o.probesPerTick, budget - probes);
      for (let i = 0; i < step; i++) for (const k of names) sums[k] += truth[k] * (1 + 0.6 * gauss(r));
      probes += step;
      const metrics = {};
      let worst = 0;
      for (const k of names) {
        const value = sums[k] / probes;
        const stderr = (0.6 * Math.abs(truth[k])) / Math.sqrt(probes);
        metrics[k] = { value: k === "gn_gap" && truth[k] < 1e-3 ? truth[k] : value, stderr };
        history[k].push([probes, metrics[k].value, stderr]);
        if (Math.abs(value) > 0) worst = Math.max(worst, (1.96 * stderr) / Math.abs(value));
      }
      const done = probes >= budget || (relci !== null && worst <= relci);
      this.model.set("estimate", { job, v, w, space, probes, done, metrics, history: Object.fromEntries(names.map((k) => [k, history[k].slice()])) });
      this.setStatus({ progress: done ? 1 : probes / budget, elapsed: this.elapsed(), message: `Streaming H[${v}, ${w}] · ${probes}/${budget} probes` });
      if (done) {
        this.stop();
        this.active = null;
        this.setStatus({ state: "done", message: `H[${v}, ${w}] · ${probes} probes${relci !== null && probes < budget ? ` (target ±${(relci * 100).toFixed(1)}% reached)` : ""}`, progress: 1, elapsed: this.elapsed() });
        this.finish();
      }
    };
    this.timer = setInterval(tick, this.o.tickMs);
  }

  makeBlock(job, v, w, space, dv, dw) {
    const r = rng(hashString(`block|${v}|${w}|${space}`));
    const diag = v === w;
    const k = Math.max(1, Math.min(4, Math.min(dv, dw)));
    const J1 = Array.from({ length: k * dv }, () => gauss(r));
    const J2 = diag ? J1 : Array.from({ length: k * dw }, () => gauss(r));
    const scale = 0.3 / k;
    const gn = new Float32Array(dv * dw);
    const tensor = new Float32Array(dv * dw);
    const full = new Float32Array(dv * dw);
    const curved = r() < 0.6;
    for (let i = 0; i < dv; i++) {
      for (let j = 0; j < dw; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) s += J1[q * dv + i] * J2[q * dw + j];
        gn[i * dw + j] = scale * s;
      }
    }
    if (curved) {
      for (let i = 0; i < dv; i++) {
        for (let j = diag ? i : 0; j < dw; j++) {
          const t = 0.12 * gauss(r) * Math.exp(-Math.abs(i - j) / 3);
          tensor[i * dw + j] = t;
          if (diag) tensor[j * dw + i] = t;
        }
      }
    }
    for (let q = 0; q < full.length; q++) full[q] = gn[q] + tensor[q];
    let vmax = 0;
    for (const a of [full, gn, tensor]) for (const x of a) vmax = Math.max(vmax, Math.abs(x));
    const fro = (a) => Math.sqrt(a.reduce((acc, x) => acc + x * x, 0));
    const eig = diag ? symEig(full, dv) : null;
    const metrics = {
      resonance: fro(full), norm_full: fro(full), norm_gn: fro(gn), norm_tensor: fro(tensor),
      gn_gap: fro(tensor) / (fro(gn) + 1e-12), coupling: diag ? 1 : this.truth(v, w, space).coupling,
      stable_rank: diag ? fro(full) ** 2 / Math.max(...eig.map(Math.abs)) ** 2 : 1 + 3 * r(),
      spectral_norm: diag ? Math.max(...eig.map(Math.abs)) : fro(full) * 0.7,
      ...(diag ? { trace: eig.reduce((a, b) => a + b, 0) } : {}),
    };
    return {
      job, v, w, space, shape: [dv, dw], shown_shape: [dv, dw], downsampled: false,
      parts: { full: bufOf(full, [dv, dw]), gn: bufOf(gn, [dv, dw]), tensor: bufOf(tensor, [dv, dw]) },
      vmax, eigenvalues: eig ? bufOf(Float64Array.from(eig), [dv], "float64") : null, metrics,
    };
  }

  exact(job, v, w, space) {
    const cap = v === w ? 160 : 400; // keep the mock's Jacobi eigen-solver quick
    const dv = Math.min(this.dims(v, space), cap);
    const dw = Math.min(this.dims(w, space), cap);
    let step = 0;
    const steps = 6;
    this.timer = setInterval(() => {
      if (!this.active || this.active.job !== job) return;
      step += 1;
      this.setStatus({ progress: step / steps, elapsed: this.elapsed(), message: `Exact H[${v}, ${w}] · ${Math.round((dw * step) / steps)}/${dw} columns` });
      if (step < steps) return;
      this.stop();
      this.active = null;
      this.model.set("block", this.makeBlock(job, v, w, space, dv, dw));
      this.setStatus({ state: "done", message: `Exact H[${v}, ${w}] · ${dv}×${dw}`, progress: 1, elapsed: this.elapsed() });
      this.finish();
    }, this.o.blockDelayMs / steps);
  }

  couplingMap(msg) {
    const g = this.model.get("graph") || { nodes: [] };
    const space = msg.space === "parameter" ? "parameter" : "activation";
    const names = Array.isArray(msg.nodes) && msg.nodes.length
      ? msg.nodes.map(String)
      : space === "parameter" ? (g.groups || []).slice() : g.nodes.filter((n) => n.addressable !== false).map((n) => n.id);
    const n = names.length;
    const job = this.begin("map", `Coupling map of ${n} nodes (${space})`);
    const R = new Float32Array(n * n), C = new Float32Array(n * n), gap = new Float32Array(n * n);
    const filled = new Uint8Array(n * n);
    let row = 0;
    const publish = (done) => this.model.set("coupling_map", {
      job, space, names, R: bufOf(R, [n, n]), C: bufOf(C, [n, n]), gap: bufOf(gap, [n, n]), filled: bufOf(filled, [n, n], "uint8"), done,
    });
    publish(false);
    this.timer = setInterval(() => {
      if (!this.active || this.active.job !== job) return;
      for (let j = row; j < n; j++) {
        const t = this.truth(names[row], names[j], space);
        const dist = Math.abs(row - j);
        const c = row === j ? 1 : Math.min(1.05, t.coupling * Math.exp(-dist / 6) + 0.05);
        const rr = t.resonance * Math.exp(-dist / 4);
        for (const [a, b] of [[row, j], [j, row]]) {
          R[a * n + b] = rr; C[a * n + b] = c; gap[a * n + b] = t.gn_gap; filled[a * n + b] = 1;
        }
      }
      row += 1;
      const done = row >= n;
      publish(done);
      this.setStatus({ progress: row / n, elapsed: this.elapsed(), message: `Coupling map · ${row}/${n} rows` });
      if (done) {
        this.stop();
        this.active = null;
        this.setStatus({ state: "done", message: `Coupling map of ${n} nodes`, progress: 1, elapsed: this.elapsed() });
      }
    }, this.o.mapRowMs);
  }

  /** Lanczos extremes with shrinking bounds, then an SLQ density refining probe by probe. */
  streamSpectrum(msg, job, n) {
    const r = rng(hashString(`spec|${msg.group}`));
    const k = 5;
    const top = Array.from({ length: k }, (_, i) => 2.5 / (1 + i * 0.6) + 0.05 * r());
    const bottom = Array.from({ length: k }, (_, i) => -0.6 / (1 + i * 0.8) - 0.02 * r());
    const steps = 200;
    const probesMax = 16;
    const G = 256;
    const lo = bottom[0] - 0.3;
    const hi = top[0] + 0.3;
    const grid = Float64Array.from({ length: G }, (_, i) => lo + ((hi - lo) * i) / (G - 1));
    const sigma = 0.01 * (hi - lo);
    const nodes = [];
    let it = 0;
    let probes = 0;
    const base = { job, group: msg.group, node: msg.node ?? null, part: "full", n, method: "lanczos+slq", requested: msg.method || "auto",
      budget: { lanczos_iterations: steps, slq_probes: probesMax }, eigenvalues: null, pending: false };
    const publish = (stage, done) => {
      const shrink = Math.exp(-it / 25);
      const tb = top.map((_, i) => (0.4 * shrink * (1 + i)) / (1 + 0.02 * it));
      const bb = bottom.map((_, i) => (0.3 * shrink * (1 + i)) / (1 + 0.02 * it));
      const tv = top.map((x, i) => x - tb[i] * 0.5);
      const bv = bottom.map((x, i) => x + bb[i] * 0.5);
      let density = null;
      const stats = { n, lambda_max: tv[0], lambda_min: bv[0], abs_min_over_max: Math.abs(bv[0]) / tv[0], top_k: tv, bottom_k: bv };
      const errors = { lambda_max: tb[0], lambda_min: bb[0] };
      if (stage === "slq") {
        const d = new Float64Array(G);
        for (const x of nodes) for (let i = 0; i < G; i++) d[i] += Math.exp(-0.5 * ((grid[i] - x) / sigma) ** 2);
        const area = d.reduce((a, b) => a + b, 0) * ((hi - lo) / (G - 1)) || 1;
        for (let i = 0; i < G; i++) d[i] /= area;
        density = { grid: bufOf(grid, [G], "float64"), density: bufOf(d, [G], "float64") };
        const tr = n * nodes.reduce((a, b) => a + b, 0) / nodes.length;
        Object.assign(stats, { trace: tr, frobenius: Math.sqrt(n * nodes.reduce((a, b) => a + b * b, 0) / nodes.length),
          negative_fraction: nodes.filter((x) => x < 0).length / nodes.length, negative_mass: 0.12, spectral_entropy: 5.1,
          effective_rank: 160, stable_rank: 3.2, numerical_rank: n, tol: 1e-12 });
        errors.trace = Math.abs(tr) * 0.3 / Math.sqrt(probes);
      }
      this.model.set("spectrum", { ...base, stage, done, stats, errors, density, top: tv, top_bounds: tb, bottom: bv, bottom_bounds: bb,
        lanczos_iterations: it, converged: it >= 120, slq_probes: probes, sigma: stage === "slq" ? sigma : null,
        progress: done ? 1 : stage === "lanczos" ? 0.5 * it / steps : 0.5 + 0.5 * probes / probesMax,
        note: `local Hessian of '${msg.group}': auto chose Lanczos extremes + SLQ density: ${n} parameters > dense_max=3000 (mock).` });
      this.setStatus({ progress: done ? 1 : stage === "lanczos" ? 0.5 * it / steps : 0.5 + 0.5 * probes / probesMax, elapsed: this.elapsed(),
        message: `Local spectrum of ${msg.group} · lanczos+slq · ${stage === "lanczos" ? `Lanczos step ${it}/${steps}` : `SLQ ${probes}/${probesMax} probes`}` });
    };
    this.timer = setInterval(() => {
      if (!this.active || this.active.job !== job) return;
      if (it < steps) { it = Math.min(steps, it + 8); publish("lanczos", false); return; }
      probes += 1;
      for (let j = 0; j < 40; j++) nodes.push(r() < 0.85 ? 0.05 * gauss(r) : top[0] * r() * (r() < 0.2 ? -0.3 : 1));
      const done = probes >= probesMax;
      publish("slq", done);
      if (done) {
        this.stop();
        this.active = null;
        this.setStatus({ state: "done", message: `Local spectrum of ${msg.group} (${n} parameters, lanczos+slq)`, progress: 1, elapsed: this.elapsed() });
      }
    }, this.o.tickMs);
  }

  spectrum(msg) {
    if (typeof msg.group !== "string") return this.error("spectrum needs a parameter group name");
    const job = this.begin("spectrum", `Local spectrum of ${msg.group}`);
    const n = this.dims(msg.group, "parameter");
    if (n > 3000 || ["lanczos", "slq", "lanczos+slq"].includes(msg.method)) return this.streamSpectrum(msg, job, n);
    this.model.set("spectrum", { job, group: msg.group, node: msg.node ?? null, pending: true, stage: "starting", stats: {} });
    this.timer = setTimeout(() => {
      if (!this.active || this.active.job !== job) return;
      this.active = null;
      this.timer = null;
      const d = Math.min(this.dims(msg.group, "parameter"), 120);
      const b = this.makeBlock(job, msg.group, msg.group, "parameter", d, d);
      const lam = Array.from(new Float64Array(b.eigenvalues.data.buffer, b.eigenvalues.data.byteOffset, d));
      const amax = Math.max(...lam.map(Math.abs));
      const tol = 1e-6 * amax;
      const nz = lam.filter((x) => Math.abs(x) > tol);
      const neg = nz.filter((x) => x < 0);
      const absSum = nz.reduce((a, x) => a + Math.abs(x), 0);
      const p = nz.map((x) => Math.abs(x) / absSum);
      const entropy = -p.reduce((a, q) => a + q * Math.log(q), 0);
      const pos = lam.filter((x) => x > tol);
      const sq = lam.reduce((a, x) => a + x * x, 0);
      const stats = {
        n: d, eps: 1e-6, tol, lambda_max: Math.max(...lam), lambda_min: Math.min(...lam),
        trace: lam.reduce((a, x) => a + x, 0), frobenius: Math.sqrt(sq),
        negative_fraction: neg.length / nz.length, negative_mass: neg.reduce((a, x) => a - x, 0) / absSum,
        abs_min_over_max: Math.abs(Math.min(...lam)) / Math.max(...lam),
        condition_number: pos.length ? Math.max(...pos) / Math.min(...pos) : null,
        spectral_entropy: entropy, effective_rank: Math.exp(entropy), stable_rank: sq / (amax * amax),
        numerical_rank: nz.length, top_k: lam.slice().sort((x, y) => y - x).slice(0, 5),
      };
      const sorted = lam.slice().sort((x, y) => x - y);
      this.model.set("spectrum", { job, group: msg.group, node: msg.node ?? null, method: "exact", stage: "exact", done: true, pending: false, n: d,
        eigenvalues: b.eigenvalues, density: null, stats, progress: 1, top: sorted.slice(-5).reverse(), top_bounds: [0, 0, 0, 0, 0],
        bottom: sorted.slice(0, 5), bottom_bounds: [0, 0, 0, 0, 0] });
      this.setStatus({ state: "done", message: `Local spectrum of ${msg.group} (${d} parameters, exact)`, progress: 1, elapsed: this.elapsed() });
    }, 400);
  }
}

/** A synthetic `run` trait (hessexplore.widget.run_json layout) over the graph's groups. */
export function mockRun(graph, { checkpoints = 6, every = 20 } = {}) {
  const groups = (graph && graph.groups) || [];
  const steps = Array.from({ length: checkpoints }, (_, i) => i * every);
  const values = { lambda_max: {}, lambda_min: {}, trace: {}, negative_mass: {}, trace_share: {}, "lambda_max/trace": {} };
  groups.forEach((g, gi) => {
    const r = rng(hashString(`run|${g}`));
    const a = 0.5 + 3 * r();
    const lmax = steps.map((s, i) => a * (1 + 1.5 * (1 - Math.exp(-i / 2))) * (1 + 0.3 * gi / Math.max(1, groups.length)));
    const tr = lmax.map((x) => x * (2 + r()));
    values.lambda_max[g] = lmax;
    values.lambda_min[g] = lmax.map((x, i) => -0.2 * x * Math.exp(-i / 3));
    values.trace[g] = tr;
    values.negative_mass[g] = steps.map((_, i) => 0.3 * Math.exp(-i / 2) * r());
    values["lambda_max/trace"][g] = lmax.map((x, i) => x / tr[i]);
  });
  steps.forEach((_, i) => {
    const total = groups.reduce((acc, g) => acc + values.trace[g][i], 0);
    groups.forEach((g) => { (values.trace_share[g] = values.trace_share[g] || []).push(values.trace[g][i] / total); });
  });
  if (groups.length) values.lambda_max[groups[0]][1] = null;     // a missing value (NaN in the run)
  return {
    name: "mock-run", part: "full", steps, groups, values,
    stats: ["lambda_max", "lambda_min", "trace", "trace_share", "negative_mass", "lambda_max/trace"],
    normalized: ["lambda_max/trace"],
    losses: { train: steps.map((_, i) => 1.1 * Math.exp(-i / 2) + 0.05), test: steps.map((_, i) => 1.15 * Math.exp(-i / 2.5) + 0.12) },
  };
}
