// vaekit explorer: the latent map, live decoding, interpolation and your own examples.
// Plain JavaScript, no libraries; every request goes to the server that served the page.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const SLIDER_RANGE = 4;  // sliders span [-4, 4] (wider when a code lies outside)
const NEIGHBORS = 8;

const state = {
  info: null, map: null, code: null, a: null, b: null, token: null,
  format: "list", view: null, examples: new Map(), decodeBusy: false, decodeAgain: false,
};

const $ = (id) => document.getElementById(id);
const fixed2 = (v) => (Math.round(v * 100) / 100 + 0).toFixed(2);  // no "-0.00"

// --- talking to the server ------------------------------------------------------------
function requestHeaders(json) {
  const headers = {};
  if (json) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = "Bearer " + state.token;
  return headers;
}

async function api(path, body) {
  const options = body === undefined
    ? { headers: requestHeaders(false) }
    : { method: "POST", headers: requestHeaders(true), body: JSON.stringify(body) };
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) throw new Error((data && data.error) || response.status + " " + response.statusText);
  return data;
}

function setStatus(message, isError) {
  const line = $("status");
  line.textContent = message;
  line.classList.toggle("error", Boolean(isError));
}

function failed(err) { setStatus(err.message, true); }

// --- showing examples: images as PNG, table rows as bars ------------------------------
function renderItem(holder, value) {
  holder.replaceChildren();
  if (typeof value === "string") {
    const img = document.createElement("img");
    img.className = "pixel";
    img.alt = "decoded example";
    img.src = "data:image/png;base64," + value;
    holder.appendChild(img);
    return;
  }
  holder.appendChild(bars(value.flat(Infinity)));
}

function bars(values) {
  const canvas = document.createElement("canvas");
  canvas.width = 240; canvas.height = 80;
  const ctx = canvas.getContext("2d");
  const limit = Math.max(1e-9, ...values.map(Math.abs));
  const width = canvas.width / values.length;
  ctx.fillStyle = "#1f77b4";
  values.forEach((v, i) => {
    const h = (v / limit) * (canvas.height / 2 - 2);
    ctx.fillRect(i * width, canvas.height / 2 - Math.max(h, 0), Math.max(1, width - 1), Math.abs(h));
  });
  ctx.strokeStyle = "#999";
  ctx.beginPath(); ctx.moveTo(0, canvas.height / 2); ctx.lineTo(canvas.width, canvas.height / 2); ctx.stroke();
  return canvas;
}

function outputOf(result) {  // the first output of a decode-like answer
  return state.format === "png" ? result.png[0] : result.x_mean[0];
}

async function example(index) {
  if (!state.examples.has(index)) {
    state.examples.set(index, api("/v1/examples/" + index + "?format=" + state.format));
  }
  return state.examples.get(index);
}

// --- the map ------------------------------------------------------------------------
function fitView(points) {
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of points) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  const padX = (x1 - x0 || 1) * 0.08, padY = (y1 - y0 || 1) * 0.08;
  return { x0: x0 - padX, x1: x1 + padX, y0: y0 - padY, y1: y1 + padY };
}

function toPixel([x, y]) {
  const c = $("map"), v = state.view;
  return [(x - v.x0) / (v.x1 - v.x0) * c.width, (1 - (y - v.y0) / (v.y1 - v.y0)) * c.height];
}

function fromPixel(px, py) {
  const c = $("map"), v = state.view;
  return [v.x0 + px / c.width * (v.x1 - v.x0), v.y0 + (1 - py / c.height) * (v.y1 - v.y0)];
}

function codeToMap(z) {
  const { center, axes } = state.map.projection;
  return axes.map((axis) => axis.reduce((sum, a, d) => sum + a * (z[d] - center[d]), 0));
}

function mapToCode(point) {
  const { center, axes } = state.map.projection;
  return center.map((c, d) => c + point[0] * axes[0][d] + point[1] * axes[1][d]);
}

function colour(i) {
  const labels = state.map.labels;
  return labels ? PALETTE[labels[i] % PALETTE.length] : "#1f77b4";
}

function marker(ctx, z, text, fill) {
  if (!z) return;
  const [px, py] = toPixel(codeToMap(z));
  ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.moveTo(px - 7, py); ctx.lineTo(px + 7, py); ctx.moveTo(px, py - 7); ctx.lineTo(px, py + 7); ctx.stroke();
  if (text) {
    ctx.fillStyle = fill; ctx.font = "bold 14px sans-serif"; ctx.fillText(text, px + 6, py - 6);
  }
}

function drawMap() {
  const canvas = $("map"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 0.7;
  state.map.points.forEach((p, i) => {
    const [px, py] = toPixel(p);
    ctx.fillStyle = colour(i);
    ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
  });
  ctx.globalAlpha = 1;
  ctx.fillStyle = "#555"; ctx.font = "12px sans-serif";
  ctx.fillText(state.map.axes[0] + " \u2192", canvas.width - 70, canvas.height - 6);
  ctx.fillText("\u2191 " + state.map.axes[1], 4, 14);
  marker(ctx, state.a, "A", "#d62728");
  marker(ctx, state.b, "B", "#1f77b4");
  marker(ctx, state.code, "", "#000");
}

function nearestPoint(px, py) {
  let best = -1, bestDistance = 8 * 8;
  state.map.points.forEach((p, i) => {
    const [qx, qy] = toPixel(p);
    const d = (qx - px) ** 2 + (qy - py) ** 2;
    if (d < bestDistance) { best = i; bestDistance = d; }
  });
  return best;
}

function canvasPosition(event) {
  const canvas = $("map"), box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width,
    (event.clientY - box.top) * canvas.height / box.height];
}

let hovered = -1;
async function onHover(event) {
  const [px, py] = canvasPosition(event);
  const i = nearestPoint(px, py);
  const tip = $("tooltip");
  if (i < 0) { tip.hidden = true; hovered = -1; return; }
  tip.style.left = (px + 14) + "px";
  tip.style.top = (py + 14) + "px";
  if (i === hovered) return;
  hovered = i;
  const index = state.map.indices[i];
  try {
    const item = await example(index);
    if (hovered !== i) return;
    renderItem($("tooltip-item"), state.format === "png" ? item.png[0] : item.x[0]);
    $("tooltip-text").textContent = "test #" + index + (item.label !== null ? ", label " + item.label : "");
    tip.hidden = false;
  } catch (err) { failed(err); }
}

function legend() {
  const { classes, labels } = state.map;
  const holder = $("legend");
  holder.replaceChildren();
  if (!labels) return;
  const seen = [...new Set(labels)].sort((p, q) => p - q);
  for (const k of seen) {
    const entry = document.createElement("span");
    entry.className = "legend-entry";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[k % PALETTE.length];
    entry.append(swatch, classes && classes[k] !== undefined ? classes[k] : String(k));
    holder.appendChild(entry);
  }
}

// --- the current code: sliders and live decoding -------------------------------------
function buildSliders() {
  const holder = $("sliders");
  holder.replaceChildren();
  const scores = new Map(state.info.dimensions.map((row) => [row.dim, row]));
  for (const d of state.info.sliders) {
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    const score = scores.get(d);
    const kind = score.KL !== undefined ? "KL" : "var";
    name.textContent = "z[" + d + "] " + kind + " " + score[kind].toFixed(2);
    name.title = score.unit;
    const input = document.createElement("input");
    input.type = "range"; input.min = -SLIDER_RANGE; input.max = SLIDER_RANGE; input.step = 0.01;
    input.value = 0; input.dataset.dim = d; input.id = "slider-" + d;
    const value = document.createElement("output");
    value.id = "slider-value-" + d;
    input.addEventListener("input", () => {
      state.code[d] = Number(input.value);
      value.textContent = fixed2(Number(input.value));
      drawMap();
      requestDecode();
    });
    row.append(name, input, value);
    holder.appendChild(row);
  }
}

function setCode(z) {
  state.code = z.slice();
  for (const d of state.info.sliders) {
    const input = $("slider-" + d);
    const limit = Math.max(SLIDER_RANGE, Math.ceil(Math.abs(z[d])));
    input.min = -limit; input.max = limit;
    input.value = z[d];
    $("slider-value-" + d).textContent = fixed2(z[d]);
  }
  const shown = state.code.slice(0, 8).map(fixed2).join(", ");
  $("code-text").textContent = "z = [" + shown + (state.code.length > 8 ? ", ..." : "") + "]";
  drawMap();
  requestDecode();
}

async function requestDecode() {
  if (state.decodeBusy) { state.decodeAgain = true; return; }
  state.decodeBusy = true;
  try {
    const result = await api("/v1/decode", { z: [state.code], format: state.format });
    const holder = $("decoded");
    renderItem(holder, outputOf(result));
    holder.dataset.version = String(Number(holder.dataset.version) + 1);
  } catch (err) { failed(err); }
  state.decodeBusy = false;
  if (state.decodeAgain) { state.decodeAgain = false; requestDecode(); }
}

// --- interpolation --------------------------------------------------------------------
async function setEnd(which) {
  state[which] = state.code.slice();
  drawMap();
  try {
    const result = await api("/v1/decode", { z: [state[which]], format: state.format });
    renderItem($(which + "-item"), outputOf(result));
  } catch (err) { failed(err); }
}

async function interpolate() {
  if (!state.a || !state.b) { setStatus("set A and B first", true); return; }
  const steps = Math.round(Number($("steps").value));
  try {
    const result = await api("/v1/interpolate", {
      z_a: state.a, z_b: state.b, steps, method: $("method").value, format: state.format,
    });
    const strip = $("strip");
    strip.replaceChildren();
    const frames = state.format === "png" ? result.png : result.x_mean;
    for (const frame of frames) {
      const holder = document.createElement("span");
      holder.className = "item frame";
      renderItem(holder, frame);
      strip.appendChild(holder);
    }
    strip.dataset.frames = String(frames.length);
    setStatus(frames.length + " frames from A to B");
  } catch (err) { failed(err); }
}

// --- your own example -----------------------------------------------------------------
function imageSize() {
  const [, height, width] = state.info.data.shape;
  return [width, height];
}

async function pngOfFile(file) {
  const url = URL.createObjectURL(file);
  try {
    const image = new Image();
    image.src = url;
    await image.decode();
    const [width, height] = imageSize();
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height;
    canvas.getContext("2d").drawImage(image, 0, 0, width, height);
    const note = image.naturalWidth === width && image.naturalHeight === height ? ""
      : " (resized from " + image.naturalWidth + "x" + image.naturalHeight + " in the browser)";
    $("drop-note").textContent = file.name + ": " + width + "x" + height + note;
    return canvas.toDataURL("image/png").split(",")[1];
  } finally { URL.revokeObjectURL(url); }
}

function parseRow(text) {
  const parts = text.split(/[\s,;]+/).filter((p) => p.length > 0);
  const values = parts.map(Number);
  if (values.length === 0 || values.some((v) => !Number.isFinite(v))) {
    throw new Error("the row must be numbers separated by commas or spaces");
  }
  return values;
}

async function onFile(file) {
  try {
    if (state.format === "png" && !/\.(csv|txt)$/i.test(file.name)) {
      await analyse({ png: [await pngOfFile(file)] });
    } else {
      const firstLine = (await file.text()).split(/\r?\n/).find((line) => line.trim()) || "";
      await analyse({ x: [parseRow(firstLine)] });
    }
  } catch (err) { failed(err); }
}

async function analyse(input) {
  const [code, recon, score, near] = await Promise.all([
    api("/v1/encode", input),
    api("/v1/reconstruct", { ...input, format: state.format }),
    api("/v1/score", input),
    api("/v1/neighbors", { ...input, k: NEIGHBORS }),
  ]);
  $("analysis").hidden = false;
  renderItem($("input-item"), input.png ? input.png[0] : input.x[0]);
  renderItem($("recon-item"), outputOf(recon));
  $("score-text").textContent = "anomaly score " + score.score[0].toFixed(2) + " " + score.unit
    + " (" + score.description + "); higher than " + score.test_percentile[0].toFixed(0)
    + "% of the map's test examples";
  const z = code.z_mean[0];
  $("input-code").textContent = "code z = [" + z.slice(0, 8).map(fixed2).join(", ")
    + (z.length > 8 ? ", ..." : "") + "]";
  const holder = $("neighbors");
  holder.replaceChildren();
  await Promise.all(near.neighbors[0].map(async (n) => {
    const figure = document.createElement("figure");
    const item = document.createElement("div");
    item.className = "item small";
    const caption = document.createElement("figcaption");
    caption.textContent = "#" + n.index + (n.label !== null ? " (" + n.label + ")" : "") + " d=" + n.distance.toFixed(2);
    figure.append(item, caption);
    holder.appendChild(figure);
    const found = await example(n.index);
    renderItem(item, state.format === "png" ? found.png[0] : found.x[0]);
  }));
  setCode(z);
  setStatus("analysed your example");
}

// --- the run's numbers ------------------------------------------------------------------
function unitOf(key) {
  if (/neg_elbo|recon|kl|nll/.test(key)) return "nats per example";
  if (/bits_per_dim/.test(key)) return "bits/dim";
  if (/mse/.test(key)) return "per pixel";
  if (/seconds/.test(key)) return "s";
  return "";
}

function metricsTable() {
  const body = $("metrics").querySelector("tbody");
  body.replaceChildren();
  const info = state.info;
  const rows = [
    ["model", info.model + " (" + info.arch + "), z = " + info.latent_dim, ""],
    ["likelihood", String(info.likelihood), ""],
    ["data", info.data.name + ", " + info.data.kind + " " + info.data.shape.join("x"), ""],
    ["test examples", String(info.data.test_examples), ""],
  ];
  for (const [key, value] of Object.entries(info.metrics || {})) {
    if (typeof value === "number") {
      rows.push([key, Number.isInteger(value) ? String(value) : value.toFixed(4), unitOf(key)]);
    }
  }
  for (const [key, value, unit] of rows) {
    const tr = document.createElement("tr");
    for (const text of [key, value, unit]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

// --- start ----------------------------------------------------------------------------
function readToken() {
  const match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (match) {
    state.token = decodeURIComponent(match[1]);
    sessionStorage.setItem("vaekit-token", state.token);
    history.replaceState(null, "", window.location.pathname);  // the token leaves the address bar
  } else {
    state.token = sessionStorage.getItem("vaekit-token");
  }
}

function wire() {
  const canvas = $("map");
  canvas.addEventListener("mousemove", onHover);
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; hovered = -1; });
  canvas.addEventListener("click", (event) => {
    const [px, py] = canvasPosition(event);
    setCode(mapToCode(fromPixel(px, py)));
  });
  $("set-a").addEventListener("click", () => setEnd("a"));
  $("set-b").addEventListener("click", () => setEnd("b"));
  $("interpolate").addEventListener("click", interpolate);
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) onFile(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) onFile(event.target.files[0]);
  });
  $("analyse-row").addEventListener("click", async () => {
    try { await analyse({ x: [parseRow($("row").value)] }); } catch (err) { failed(err); }
  });
}

async function start() {
  readToken();
  wire();
  try {
    [state.info, state.map] = await Promise.all([api("/v1/info"), api("/v1/map")]);
  } catch (err) { failed(err); return; }
  const info = state.info;
  const images = info.data.kind === "image" && [1, 3].includes(info.data.shape[0]);
  state.format = images ? "png" : "list";
  document.title = "vaekit explorer: " + info.name;
  $("run-name").textContent = info.name;
  $("run-summary").textContent = info.model + " on " + info.data.name + ", latent_dim "
    + info.latent_dim + (info.label !== null ? ", decoded as label " + info.label : "");
  $("map-note").textContent = (state.map.method === "z" ? "The codes themselves"
    : "First two principal components of the " + info.latent_dim + "-D codes")
    + ", " + state.map.points.length + " test examples. Hover a point to see its example; click anywhere to decode that point.";
  $("drop").hidden = !images;
  state.view = fitView(state.map.points);
  legend();
  buildSliders();
  metricsTable();
  setCode(mapToCode([0, 0]));
  setStatus("ready");
}

document.addEventListener("DOMContentLoaded", start);
