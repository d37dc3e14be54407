// vgm explore: the page. Plain JS and canvas; every request goes to the server that served this file.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
let info = null;
let z = [];                       // the sliders' z, in the model's dimension order
let mapData = null;               // {points, labels, invertible, ...} of the projection shown
let mapView = null;               // how map coordinates become canvas pixels
let selected = {a: 0, b: 1};

// ----- helpers -----------------------------------------------------------------------------------------------

async function api(path, options) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try { message = (await r.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  const type = r.headers.get("Content-Type") || "";
  return type.startsWith("application/json") ? r.json() : r.blob();
}

function status(text, isError) {
  const s = $("status");
  s.textContent = text || "";
  s.className = isError ? "error" : "";
}

function el(tag, props, children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children || []) e.append(c);
  return e;
}

function img(src, cls, title) {
  return el("img", {src: src, className: "px " + (cls || ""), alt: title || "", title: title || ""});
}

function fmt(v, digits) {
  return v === null || v === undefined ? "—" : Number(v).toFixed(digits === undefined ? 2 : digits);
}

// Run `work` again whenever asked, but never twice at once: while one request is in flight, further asks
// collapse into one more run, made with the state as it is then (a drag decodes only its latest position).
function coalesced(work) {
  let busy = false, again = false;
  return function trigger() {
    again = true;
    if (busy) return;
    busy = true;
    (async () => {
      while (again) {
        again = false;
        try { await work(); } catch (e) { status(e.message, true); }
      }
      busy = false;
    })();
  };
}

async function drawBlob(canvas, blob) {
  const bitmap = await createImageBitmap(blob);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
}

// ----- sliders ---------------------------------------------------------------------------------------------

const zParam = () => z.map((v) => v.toFixed(4)).join(",");

const decode = coalesced(async () => {
  const shown = zParam();
  const blob = await api("/api/decode?z=" + shown);
  await drawBlob($("decoded"), blob);
  $("decoded").dataset.z = shown;
});

const traverse = coalesced(async () => {
  if (!info.traversal) return;
  const span = Math.min(3, info.range);
  const res = await api("/api/traversal?steps=9&span=" + span + "&z=" + zParam());
  $("span-text").textContent = $("span-text2").textContent = span;
  const rows = res.rows.map((r) => {
    let label = "z" + r.dim + "  KL " + fmt(r.kl);
    if (r.factor) label += "  · tracks " + r.factor.factor + " (" + fmt(r.factor.nmi) + ")";
    return el("div", {className: "trav-row"}, [el("span", {className: "trav-label", textContent: label}),
                                               img(r.image, "trav-strip", label)]);
  });
  $("traversal").replaceChildren(...rows);
});

function zChanged() {
  decode();
  traverse();
}

function buildSliders() {
  const rows = info.dims.map((d) => {
    const input = el("input", {type: "range", min: -info.range, max: info.range, step: 0.01, value: 0});
    input.dataset.dim = d.dim;
    const value = el("span", {className: "value", textContent: "0.00"});
    input.addEventListener("input", () => {
      z[d.dim] = Number(input.value);
      value.textContent = fmt(z[d.dim]);
      zChanged();
    });
    let text = "z" + d.dim;
    if (d.kl !== null) text += "  KL " + fmt(d.kl);
    const label = el("span", {className: "name", textContent: text});
    const tag = el("span", {className: d.active === false ? "inactive-tag" : "", textContent: d.active === false ? "inactive" : ""});
    const factor = el("span", {className: "factor", textContent: d.factor ? d.factor.factor : ""});
    return el("div", {className: "slider" + (d.active === false ? " inactive" : "")}, [label, input, value, tag, factor]);
  });
  $("sliders").replaceChildren(...rows);
}

function setZ(values) {
  z = values.map(Number);
  for (const input of $("sliders").querySelectorAll("input")) {
    const v = z[Number(input.dataset.dim)];
    input.value = v;
    input.parentElement.querySelector(".value").textContent = fmt(v);
  }
  zChanged();
}

async function priorSample() {
  const t = Number($("temperature").value);
  const res = await api("/api/prior?t=" + encodeURIComponent(t));
  setZ(res.z);
}

// ----- map -------------------------------------------------------------------------------------------------

async function loadMap(method) {
  status("computing the " + method + " map…");
  mapData = await api("/api/map?method=" + method);
  status("");
  const pts = mapData.points;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  if (x1 - x0 < 1e-9) { x0 -= 1; x1 += 1; }
  const c = $("map"), pad = 16;
  mapView = {x0, x1, y0, y1, pad, w: c.width - 2 * pad, h: c.height - 2 * pad};
  const caption = method === "pca" ? "PCA: " + mapData.explained.map((v) => (100 * v).toFixed(0) + "%").join(" + ") +
    " of the variance" : method === "tsne" ? "t-SNE (no inverse: click a point, not empty space)" : "the latent itself";
  $("map-caption").textContent = caption;
  drawMap();
}

function toPixel(p) {
  const v = mapView;
  return [v.pad + (p[0] - v.x0) / (v.x1 - v.x0) * v.w, v.pad + (1 - (p[1] - v.y0) / (v.y1 - v.y0)) * v.h];
}

function fromPixel(px, py) {
  const v = mapView;
  return [v.x0 + (px - v.pad) / v.w * (v.x1 - v.x0), v.y0 + (1 - (py - v.pad) / v.h) * (v.y1 - v.y0)];
}

function colourOf(i) {
  if (!mapData.labels) return "#1f77b4";
  const col = Number($("map-colour").value || 0);
  const row = mapData.labels[i];
  const v = Array.isArray(row) ? row[col] : row;
  const distinct = mapStats.distinct[col];
  if (distinct <= 10) return PALETTE[((v % 10) + 10) % 10];
  const t = (v - mapStats.min[col]) / Math.max(1, mapStats.max[col] - mapStats.min[col]);
  return "hsl(" + (260 - 220 * t).toFixed(0) + ", 70%, 45%)";
}

let mapStats = {distinct: [], min: [], max: []};
function labelStats() {
  mapStats = {distinct: [], min: [], max: []};
  if (!mapData.labels) return;
  const cols = Array.isArray(mapData.labels[0]) ? mapData.labels[0].length : 1;
  for (let c = 0; c < cols; c++) {
    const vals = mapData.labels.map((r) => Array.isArray(r) ? r[c] : r);
    mapStats.distinct.push(new Set(vals).size);
    mapStats.min.push(Math.min(...vals));
    mapStats.max.push(Math.max(...vals));
  }
}

function drawMap() {
  const c = $("map"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  labelStats();
  mapData.points.forEach((p, i) => {
    const [x, y] = toPixel(p);
    ctx.fillStyle = colourOf(i);
    ctx.globalAlpha = 0.75;
    ctx.beginPath();
    ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
    ctx.fill();
  });
  ctx.globalAlpha = 1;
  for (const [key, colour] of [["a", "#000"], ["b", "#c00"]]) {
    const p = mapData.points[selected[key]];
    if (!p) continue;
    const [x, y] = toPixel(p);
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x, y, 7, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.fillStyle = colour;
    ctx.fillText(key.toUpperCase(), x + 8, y - 8);
  }
}

function nearestPoint(px, py, radius) {
  let best = -1, bestD = radius * radius;
  mapData.points.forEach((p, i) => {
    const [x, y] = toPixel(p);
    const d = (x - px) ** 2 + (y - py) ** 2;
    if (d <= bestD) { bestD = d; best = i; }
  });
  return best;
}

function canvasXY(ev) {
  const r = $("map").getBoundingClientRect();
  return [(ev.clientX - r.left) * $("map").width / r.width, (ev.clientY - r.top) * $("map").height / r.height];
}

function onMapMove(ev) {
  if (!mapData) return;
  const [px, py] = canvasXY(ev);
  const i = nearestPoint(px, py, 6);
  const hover = $("hover");
  if (i < 0) { hover.hidden = true; return; }
  $("hover-img").src = "/api/example.png?i=" + i;
  const label = mapData.labels ? mapData.labels[i] : null;
  $("hover-text").textContent = "#" + i + (label === null ? "" : "  label " + (Array.isArray(label) ? label.join(",") : label));
  hover.style.left = (px + 12) + "px";
  hover.style.top = (py + 12) + "px";
  hover.hidden = false;
}

async function onMapClick(ev) {
  if (!mapData) return;
  const [px, py] = canvasXY(ev);
  const i = nearestPoint(px, py, 6);
  if (i >= 0) {
    const res = await api("/api/point?i=" + i);
    if (ev.shiftKey) { selected.b = i; $("interp-b").value = i; } else { selected.a = i; $("interp-a").value = i; }
    drawMap();
    setZ(res.z);
    interpolateSoon();
    status("z of test example #" + i);
    return;
  }
  if (!mapData.invertible) { status("t-SNE has no inverse: click a point, or switch to PCA", true); return; }
  const [x, y] = fromPixel(px, py);
  const res = await api("/api/unmap?x=" + x.toFixed(5) + "&y=" + y.toFixed(5));
  setZ(res.z);
  status("decoded the place (" + fmt(x) + ", " + fmt(y) + ") of the map");
}

// ----- interpolation ---------------------------------------------------------------------------------------

async function interpolate() {
  const a = $("interp-a").value, b = $("interp-b").value, steps = $("interp-steps").value;
  selected = {a: Number(a), b: Number(b)};
  if (mapData) drawMap();
  const res = await api("/api/interpolate?i=" + encodeURIComponent(a) + "&j=" + encodeURIComponent(b) +
                        "&steps=" + encodeURIComponent(steps));
  const rows = ["linear", "spherical"].map((name) => {
    const cells = res[name].map((p, k) => el("figure", {className: "cell"}, [
      img(p.image, "cell-img", name + " t=" + fmt(res.t[k])),
      el("figcaption", {textContent: p.elbo === null ? "t " + fmt(res.t[k]) : "ELBO " + fmt(p.elbo, 1)})]));
    return el("div", {className: "strip-row"}, [el("span", {className: "strip-name", textContent: name}),
      img(res.ends[0], "cell-img end", "A"), ...cells, img(res.ends[1], "cell-img end", "B")]);
  });
  const note = el("p", {className: "hint", textContent: "ELBO in nats of each decoded image (" +
    "reconstruction averaged over 32 draws z ~ q(z|x), KL in closed form); the outer images are A and B."});
  $("interp-out").replaceChildren(...rows, note);
}

const interpolateSoon = coalesced(interpolate);

// ----- draw or upload ----------------------------------------------------------------------------------------

function setupPad() {
  const pad = $("pad"), ctx = pad.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  ctx.strokeStyle = "#fff";
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.lineWidth = info.shape[1] === 8 ? 34 : 20;
  let drawing = false, moved = false;
  const at = (ev) => {
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
  };
  pad.addEventListener("pointerdown", (ev) => {
    drawing = true; moved = false;
    pad.setPointerCapture(ev.pointerId);
    const [x, y] = at(ev);
    ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x + 0.01, y); ctx.stroke();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    const [x, y] = at(ev);
    ctx.lineTo(x, y); ctx.stroke();
    moved = true;
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    pad.toBlob((blob) => encodeImage(blob, true).catch((e) => status(e.message, true)), "image/png");
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => { clear(); $("encoded").replaceChildren(); });
}

async function encodeImage(blob, drawn) {
  const res = await api("/api/encode?drawn=" + (drawn ? 1 : 0), {method: "POST", body: blob});
  status("");
  if (info.family === "flow") {
    const text = "log p(x) " + fmt(res.log_px, 1) + " nats" +
      (res.bits_per_dim === null ? "" : ", " + fmt(res.bits_per_dim, 3) + " bits/dim");
    $("encoded").replaceChildren(el("div", {className: "row"}, [
      el("figure", {}, [img(res.input, "big input", "input"), el("figcaption", {textContent: "input, as the model sees it"})]),
      el("p", {className: "density", textContent: text})]));
    return;
  }
  const score = res.elbo === null ? "no ELBO (autoencoder)" :
    "ELBO " + fmt(res.elbo, 2) + " nats  (reconstruction " + fmt(res.recon, 2) + ", KL " + fmt(res.kl, 2) + ")";
  const bars = el("canvas", {id: "bars", width: 360, height: 14 * info.dims.length + 24});
  drawBars(bars, res.mu, res.sigma);
  const use = el("button", {type: "button", textContent: "load this z into the sliders"});
  use.addEventListener("click", () => setZ(res.mu));
  const nearest = res.nearest.map((n) => el("figure", {className: "cell"}, [
    img(n.image, "cell-img", "training example #" + n.index),
    el("figcaption", {textContent: "d " + fmt(n.distance)})]));
  $("encoded").replaceChildren(
    el("div", {className: "row"}, [
      el("figure", {}, [img(res.input, "big input", "input"), el("figcaption", {textContent: "input, as the model sees it"})]),
      el("figure", {}, [img(res.reconstruction, "big recon", "reconstruction"), el("figcaption", {textContent: "reconstruction"})]),
      el("div", {}, [el("p", {className: "score", textContent: score}), bars, use])]),
    el("p", {className: "hint", textContent: "nearest training examples (distance between posterior means):"}),
    el("div", {className: "strip-row"}, nearest));
}

function drawBars(c, mu, sigma) {
  const ctx = c.getContext("2d"), left = 70, right = c.width - 10, R = info.range;
  const x = (v) => left + (Math.max(-R, Math.min(R, v)) + R) / (2 * R) * (right - left);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#555";
  ctx.fillText("q(z|x): μ ± σ per dimension", left, 10);
  ctx.strokeStyle = "#bbb";
  ctx.beginPath(); ctx.moveTo(x(0), 14); ctx.lineTo(x(0), c.height); ctx.stroke();
  info.dims.forEach((d, row) => {
    const y = 24 + 14 * row, m = mu[d.dim], s = sigma[d.dim];
    ctx.fillStyle = d.active === false ? "#aaa" : "#222";
    ctx.fillText("z" + d.dim, 4, y + 4);
    ctx.fillStyle = d.active === false ? "#ccc" : "#6a9fd8";
    ctx.fillRect(x(m - s), y - 4, Math.max(1, x(m + s) - x(m - s)), 8);
    ctx.fillStyle = "#000";
    ctx.fillRect(x(m) - 1, y - 5, 2, 10);
  });
}

// ----- flows and text ------------------------------------------------------------------------------------------

async function flowSample() {
  const n = $("flow-n").value, t = $("flow-t").value;
  const res = await api("/api/samples?n=" + encodeURIComponent(n) + "&t=" + encodeURIComponent(t));
  $("samples").replaceChildren(...res.images.map((src, k) => img(src, "sample", "sample " + k + " at T=" + res.temperature)));
}

async function textSample() {
  const res = await api("/api/text/sample?n=" + encodeURIComponent($("text-n").value));
  $("text-samples").replaceChildren(...res.lines.map((s) => el("li", {textContent: s})));
}

async function textInterpolate() {
  const q = "a=" + encodeURIComponent($("text-a").value) + "&b=" + encodeURIComponent($("text-b").value) +
            "&steps=" + encodeURIComponent($("text-steps").value);
  const res = await api("/api/text/interpolate?" + q);
  $("text-interp-out").replaceChildren(...res.lines.map((s) => el("li", {textContent: s})));
}

// ----- start -------------------------------------------------------------------------------------------------

function on(id, event, fn) {
  $(id).addEventListener(event, (ev) => { Promise.resolve(fn(ev)).catch((e) => status(e.message, true)); });
}

async function startLatent() {
  $("latent").hidden = false;
  $("kl-active").textContent = info.kl_active;
  $("note").textContent = info.note || "";
  z = new Array(info.latent_dim).fill(0);
  buildSliders();
  on("prior-sample", "click", priorSample);
  on("reset", "click", () => setZ(new Array(info.latent_dim).fill(0)));
  const method = $("map-method");
  for (const m of info.map_methods) method.append(el("option", {value: m, textContent: m === "tsne" ? "t-SNE" : m === "pca" ? "PCA" : "latent"}));
  on("map-method", "change", () => loadMap(method.value));
  const colour = $("map-colour");
  info.label_names.forEach((name, k) => colour.append(el("option", {value: k, textContent: name})));
  $("colour-label").hidden = !info.labels;
  on("map-colour", "change", drawMap);
  on("map", "mousemove", onMapMove);
  $("map").addEventListener("mouseleave", () => { $("hover").hidden = true; });
  on("map", "click", onMapClick);
  $("interp-a").max = $("interp-b").max = info.map_size - 1;
  on("interp", "click", interpolateSoon);
  $("traversal-panel").hidden = !info.traversal;
  zChanged();
  await loadMap(info.map_methods[0]);
  await interpolate();
}

function startImageInput() {
  $("image-in").hidden = false;
  const [c, h, w] = info.shape;
  $("pad-wrap").hidden = !info.can_draw;
  if (info.can_draw) setupPad();
  $("image-in-title").textContent = info.can_draw ? "Draw or upload an image" : "Upload an image";
  $("upload-hint").textContent = "an image of exactly " + w + "x" + h + " pixels" + (c === 1 ? " (grey)" : "") +
    (info.can_draw ? "; drawings are rescaled and centred as the data's digits are" : "") +
    (info.family === "flow" ? "; its exact log p(x) and bits/dim are shown" : "");
  on("upload", "change", (ev) => {
    const f = ev.target.files[0];
    if (f) return encodeImage(f, false);
  });
}

async function start() {
  info = await api("/api/info");
  $("run").textContent = info.run + " · " + info.kind + (info.data ? " on " + info.data : "");
  document.title = "vgm explore · " + info.run;
  if (info.family === "latent") {
    startImageInput();
    await startLatent();
  } else if (info.family === "flow") {
    $("flow").hidden = false;
    on("flow-sample", "click", flowSample);
    startImageInput();
    await flowSample();
  } else {
    $("text").hidden = false;
    on("text-sample", "click", textSample);
    $("text-interp-panel").hidden = !info.can_interpolate;
    $("text-a").value = info.examples[0] || "";
    $("text-b").value = info.examples[1] || "";
    on("text-interp", "click", textInterpolate);
    await textSample();
    if (info.can_interpolate && info.examples.length > 1) await textInterpolate();
  }
  document.body.dataset.ready = "1";
}

// for tests and the curious: where test example i sits on the map canvas (CSS pixels from its top left)
window.vgmExplore = {
  mapPixel: (i) => { const [x, y] = toPixel(mapData.points[i]); const r = $("map").getBoundingClientRect();
                     return [x * r.width / $("map").width, y * r.height / $("map").height]; },
  z: () => z.slice(),
};

start().catch((e) => status(e.message, true));
