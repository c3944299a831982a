// visprune viewer: pick an image, a question and methods; POST /api/run; draw one card per method.
"use strict";

const state = { info: null, example: null, upload: null, reading: null };
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function methodRow(spec) {
  const [name, settings] = spec.includes(":") ? spec.split(/:(.*)/s) : [spec, ""];
  const select = el("select", { class: "method", "aria-label": "method" });
  for (const m of state.info.methods) {
    const opt = el("option", { value: m }, m);
    if (m === name) opt.selected = true;
    select.append(opt);
  }
  const input = el("input", { class: "settings", type: "text", value: settings, placeholder: "keep=0.25",
                               "aria-label": "settings" });
  const remove = el("button", { type: "button", class: "remove", title: "remove this method" }, "\u00d7");
  const row = el("div", { class: "method-row" }, select, input, remove);
  remove.addEventListener("click", () => row.remove());
  return row;
}

function methodSpecs() {
  return [...document.querySelectorAll(".method-row")].map((row) => {
    const name = row.querySelector(".method").value;
    const settings = row.querySelector(".settings").value.trim();
    return settings ? `${name}:${settings}` : name;
  });
}

function chooseExample(ex) {
  state.example = ex.id;
  state.upload = null;
  state.reading = null;
  $("upload").value = "";
  for (const b of document.querySelectorAll("#examples button")) b.classList.toggle("selected", b.dataset.id == ex.id);
  $("question").value = ex.question;
  $("question-hint").textContent = `ground truth: ${ex.answer}`;
  const img = $("preview");
  img.src = `/api/examples/${ex.id}.png`;
  img.hidden = false;
  showError("");
}

function readUpload(file) {
  showError("");
  state.example = null;
  state.upload = null;
  for (const b of document.querySelectorAll("#examples button")) b.classList.remove("selected");
  $("question-hint").textContent = "";
  const img = $("preview");
  img.hidden = true;
  const maxBytes = state.info.max_upload_mb * 1024 * 1024;
  if (file.size > maxBytes) {
    showError(`That file is too large: ${(file.size / 1048576).toFixed(1)} MB (at most ${state.info.max_upload_mb} MB).`);
    return;
  }
  // run() waits for this, so a quick click on Run never sends a stale choice
  state.reading = new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => {
      state.upload = reader.result;
      img.onerror = () => { img.hidden = true; };
      img.onload = () => { img.hidden = false; };
      img.src = reader.result;
      resolve();
    };
    reader.onerror = () => { showError("That file could not be read."); resolve(); };
    reader.readAsDataURL(file);
  });
}

function fmt(x, digits) { return Number(x).toFixed(digits); }

function card(r, repeats) {
  const c = el("div", { class: "card", "data-label": r.label });
  c.append(el("h3", {}, r.label));
  if (r.error) {
    c.classList.add("failed");
    c.append(el("p", { class: "card-error" }, r.error));
    return c;
  }
  if (r.overlay) c.append(el("img", { class: "overlay", src: r.overlay, alt: `kept tokens of ${r.label}` }));
  else c.append(el("div", { class: "no-overlay" }, "(no overlay: this model's tokens are not one square grid)"));
  const share = r.flops_share === undefined ? "-" : `${fmt(100 * r.flops_share, 1)}%`;
  const dl = el("dl", {},
    el("dt", {}, "answer"), el("dd", { class: "answer" }, r.answer || "(empty)"),
    el("dt", {}, "kept"), el("dd", { class: "kept" }, `${r.kept} / ${r.total} (${fmt(100 * r.kept / r.total, r.kept * 10 < r.total ? 1 : 0)}%)`),
    el("dt", {}, "FLOPs"), el("dd", { class: "flops" }, `${share} of unpruned (${fmt(r.flops / 1e6, 1)} MFLOP)`),
    el("dt", {}, "latency"), el("dd", { class: "latency" }, `${fmt(r.latency_ms, 1)} ms (median of ${repeats})`));
  c.append(dl);
  return c;
}

async function run() {
  if (state.reading) { await state.reading; state.reading = null; }
  showError("");
  const question = $("question").value.trim();
  if (state.example === null && !state.upload) { showError("Pick an example or upload an image first."); return; }
  if (!question) { showError("Type a question first."); return; }
  const body = { question, methods: methodSpecs() };
  if (state.upload) body.image = state.upload; else body.example = state.example;
  $("run").disabled = true;
  $("status").textContent = "running\u2026";
  try {
    const resp = await fetch("/api/run", { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
    let data;
    try { data = await resp.json(); } catch (e) { data = { error: `the server answered ${resp.status} without a result` }; }
    if (!resp.ok || data.error) { showError(data.error || `the server answered ${resp.status}`); $("status").textContent = ""; return; }
    const results = $("results");
    results.replaceChildren(...data.results.map((r) => card(r, state.info.repeats)));
    $("status").textContent = `done: \u201c${data.question}\u201d on ${data.source} (${data.size[0]} \u00d7 ${data.size[1]} px)`;
  } catch (e) {
    showError(`The request failed: ${e.message}`);
    $("status").textContent = "";
  } finally {
    $("run").disabled = false;
  }
}

async function init() {
  try {
    const resp = await fetch("/api/info");
    state.info = await resp.json();
  } catch (e) {
    showError(`Cannot reach the server: ${e.message}`);
    return;
  }
  const info = state.info;
  $("model-name").textContent = `model: ${info.model}`;
  $("max-mb").textContent = info.max_upload_mb;
  if (info.banner) { $("banner").textContent = info.banner; $("banner").hidden = false; }
  for (const ex of info.examples) {
    const b = el("button", { type: "button", id: `example-${ex.id}`, title: ex.question, "data-id": ex.id },
                 el("img", { src: `/api/examples/${ex.id}.png`, alt: ex.question }));
    b.addEventListener("click", () => chooseExample(ex));
    $("examples").append(b);
  }
  for (const spec of info.defaults) $("methods").append(methodRow(spec));
  $("add-method").addEventListener("click", () => {
    if (document.querySelectorAll(".method-row").length >= info.max_methods) {
      showError(`At most ${info.max_methods} methods at a time.`);
      return;
    }
    $("methods").append(methodRow("atp:keep=0.5"));
  });
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) readUpload(e.target.files[0]); });
  $("run").addEventListener("click", run);
  $("question").addEventListener("keydown", (e) => { if (e.key === "Enter") run(); });
  if (info.examples.length) chooseExample(info.examples[0]);
  document.body.dataset.ready = "1";
}

init();
