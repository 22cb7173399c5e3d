// The meshtun controller's dashboard: polls /ui/data every second and draws it.
// Every value from the controller is set as text (never as HTML).
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#3f6fb5", "#e07b00", "#2e9d8f", "#9c4dcc", "#c2185b", "#5d7f1f", "#6d4c41", "#00838f"];
let last = null;
let offsetMs = 0;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function ago(ms, now) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function clock(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function fixed(x) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(2);
}

function nowMs() {
  return Date.now() + offsetMs;
}

function renderEpoch(d) {
  const dl = document.getElementById("epoch");
  dl.replaceChildren();
  const add = (k, v, id) => {
    dl.append(el("dt", k));
    const dd = el("dd", v);
    if (id) dd.id = id;
    dl.append(dd);
  };
  if (!d.epoch) {
    add("epoch", "none in force yet");
  } else {
    const c = d.epoch.current;
    add("in force", "epoch " + c.epoch + (d.epoch_cause ? " (" + d.epoch_cause + ")" : ""), "epoch-current");
    add("started", clock(c.activation_ms));
    add("ends in", "", "epoch-timer");
    add("next", d.epoch.next ? "epoch " + d.epoch.next.epoch + ", from " + clock(d.epoch.next.activation_ms) : "not published yet");
  }
  if (d.cluster) {
    const c = d.cluster;
    add("leader", (c.leader || "none holds the lease") + ", term " + c.term + ", lease " + Math.round(c.lease_left_ms / 1000) + " s left", "leader");
    const heard = (i) => i.id + (i.id === d.instance ? " (this page)" : "") + (i.leader ? " leads" : "") + ", heard " + Math.round(i.last_contact_ms / 1000) + " s ago";
    add("instances", c.instances.map(heard).join("; "), "instances");
  } else {
    add("leader", d.leader ? "this instance (sole controller)" : "another instance");
  }
  tick();
}

function tick() {
  const t = document.getElementById("epoch-timer");
  if (!t || !last || !last.epoch) return;
  const left = Math.max(0, last.epoch.current.not_after_ms - nowMs());
  const s = Math.floor(left / 1000);
  t.textContent = Math.floor(s / 60) + " min " + (s % 60) + " s (" + clock(last.epoch.current.not_after_ms) + ")";
}

function sourcedLines(td, n) {
  for (const s of n.sourced) {
    const failing = s.value === null || (s.minimum !== null && s.value < s.minimum);
    const text = s.dimension + " " + fixed(s.value) + (s.minimum !== null ? " / " + fixed(s.minimum) : "") +
      " (" + s.combine + " of " + s.sources + " sources, " + s.k + " needed)";
    const span = el("span", text, failing ? "fail" : "pass");
    span.dataset.dimension = s.dimension;
    if (td.childNodes.length) td.append(el("br"));
    td.append(span);
  }
}

function scoresCell(n, p) {
  const td = el("td");
  const b = n.last_benchmark;
  if (!b) {
    td.textContent = n.score === null ? "no benchmark" : "overall " + fixed(n.score);
    sourcedLines(td, n);
    return td;
  }
  const mins = p.minimums || {};
  const dims = [["overall", p.threshold], ["refusal", mins.refusal], ["honesty", mins.honesty], ["policy", mins.policy]];
  dims.forEach(([name, min], i) => {
    const v = b[name];
    const failing = min !== null && min !== undefined && v < min;
    const span = el("span", name + " " + fixed(v) + (min !== null && min !== undefined ? " / " + fixed(min) : ""), failing ? "fail" : "pass");
    span.dataset.dimension = name;
    td.append(span);
    if (i < dims.length - 1) td.append(el("br"));
  });
  sourcedLines(td, n);
  return td;
}

// What the node reports of its peers' paths: "3 direct, 1 relayed · reported 4 s ago".
function reportedPaths(n, now) {
  const r = n.path.peers;
  if (!r) return "not reported";
  const counts = [["direct", r.direct], ["relayed", r.relayed], ["trying", r.trying], ["no path", r.none]]
    .filter(([, c]) => c > 0)
    .map(([name, c]) => c + " " + name);
  return (counts.length ? counts.join(", ") : "no peers") + " · reported " + ago(r.received_ms, now);
}

function pathCell(n, relays, now) {
  const td = el("td");
  const reported = el("span", reportedPaths(n, now), "reported-path");
  td.append(reported, el("br"), el("span", "handed out: " + pathText(n, relays), "handed-out"));
  return td;
}

function pathText(n, relays) {
  const p = n.path;
  const parts = [];
  parts.push(p.endpoint ? "endpoint " + p.endpoint : "no endpoint");
  if (p.candidates > 0) parts.push(p.candidates + " candidates, reported from " + p.observed);
  parts.push(relays ? "relay offered" : "direct only");
  return parts.join("; ");
}

function pskText(n, now) {
  const s = n.psk;
  const parts = [];
  parts.push(s.holds_epoch !== null && s.holds_epoch !== undefined ? "holds epoch " + s.holds_epoch + " (said " + ago(s.asked_ms, now) + ")" : "no bundle request yet");
  if (s.bundle_epoch !== null && s.bundle_epoch !== undefined) parts.push("served keys of epoch " + s.bundle_epoch + " " + ago(s.bundle_ms, now));
  if (s.notice_epoch !== null && s.notice_epoch !== undefined) parts.push("cut-off notice of epoch " + s.notice_epoch + " " + ago(s.notice_ms, now));
  return parts.join("; ");
}

function renderNodes(d) {
  const tbody = document.querySelector("#nodes tbody");
  tbody.replaceChildren();
  for (const n of d.nodes) {
    const tr = el("tr");
    tr.dataset.node = n.id;
    tr.dataset.membership = n.membership;
    tr.append(el("td", n.id));
    tr.append(el("td", n.membership + (n.pin ? " (pinned " + n.pin + ")" : ""), n.membership));
    const reason = el("td", n.reason || "");
    reason.className = "reason";
    tr.append(reason);
    tr.append(scoresCell(n, d.policy));
    tr.append(el("td", n.last_benchmark ? ago(n.last_benchmark.ms, d.now_ms) : "none"));
    tr.append(pathCell(n, d.relays_offered, d.now_ms));
    tr.append(el("td", pskText(n, d.now_ms)));
    tbody.append(tr);
  }
  const more = d.nodes_total - d.nodes.length;
  document.getElementById("nodes-more").textContent = more > 0 ? more + " more nodes not listed" : "";
  const p = d.policy;
  document.getElementById("policy").textContent = "threshold " + fixed(p.threshold) + ", benchmarks older than " +
    Math.round(p.max_age_ms / 1000) + " s do not count, readmitted after " + p.readmit_after + " passing evaluation(s), topology " +
    (p.topology === "hub_and_spoke" ? "hub and spoke (hubs " + p.hubs.join(", ") + ")" : "full mesh");
}

function renderPlot(d) {
  const W = 900, H = 260, L = 40, R = 110, T = 10, B = 30;
  const box = document.getElementById("plot");
  const s = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "scores over time" });
  const h = d.history;
  // From the oldest point shown (at most the history's span), so a young mesh fills the width.
  let first = d.now_ms;
  for (const series of h.series) if (series.points.length) first = Math.min(first, series.points[0].ms);
  for (const row of h.log) if (row.ms >= h.since_ms) first = Math.min(first, row.ms);
  const x0 = Math.max(h.since_ms, first - 1000), x1 = Math.max(d.now_ms, x0 + 60000);
  const x = (ms) => L + ((ms - x0) / (x1 - x0)) * (W - L - R);
  const y = (v) => T + (1 - Math.min(1, Math.max(0, v))) * (H - T - B);
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    s.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    s.append(svg("text", { x: 4, y: y(v) + 4 }, v.toFixed(2)));
  }
  s.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  s.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  for (let i = 0; i <= 6; i++) {
    const ms = x0 + ((x1 - x0) * i) / 6;
    const hms = new Date(ms).toISOString().slice(11, x1 - x0 < 600000 ? 19 : 16);
    s.append(svg("text", { x: x(ms) - 18, y: H - 10 }, hms));
  }
  s.append(svg("line", { x1: L, x2: W - R, y1: y(d.policy.threshold), y2: y(d.policy.threshold), class: "threshold" }));
  s.append(svg("text", { x: W - R + 4, y: y(d.policy.threshold) + 4 }, "threshold " + fixed(d.policy.threshold)));
  h.series.forEach((series, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = series.points.map((p) => x(p.ms).toFixed(1) + "," + y(p.overall).toFixed(1)).join(" ");
    if (series.points.length > 1) {
      s.append(svg("polyline", { points: pts, fill: "none", stroke: colour, "stroke-width": 1.5 }));
    }
    for (const p of series.points.slice(-1)) s.append(svg("circle", { cx: x(p.ms), cy: y(p.overall), r: 2.5, fill: colour }));
    s.append(svg("text", { x: W - R + 4, y: T + 30 + i * 14, fill: colour }, series.node));
  });
  for (const row of h.log) {
    if (!row.change || row.ms < x0) continue;
    const denied = row.change === "denied";
    const cx = x(row.ms), cy = denied ? H - B - 6 : T + 6;
    const tri = denied ? [[cx - 5, cy - 5], [cx + 5, cy - 5], [cx, cy + 3]] : [[cx - 5, cy + 5], [cx + 5, cy + 5], [cx, cy - 3]];
    const mark = svg("polygon", { points: tri.map((p) => p.join(",")).join(" "), class: denied ? "denied-mark" : "readmitted-mark" });
    mark.append(svg("title", {}, row.node + " " + row.change + " in epoch " + row.epoch));
    s.append(mark);
  }
  box.replaceChildren(s);
}

function cutoffsOf(d, epoch, node) {
  return d.node_cutoffs.listed.filter((c) => c.epoch === epoch && c.peer === node);
}

function renderLog(d) {
  const tbody = document.querySelector("#log tbody");
  tbody.replaceChildren();
  for (const r of d.history.log) {
    const tr = el("tr");
    tr.dataset.node = r.node;
    tr.append(el("td", clock(r.ms)));
    tr.append(el("td", r.epoch));
    tr.append(el("td", r.cause));
    tr.append(el("td", r.node));
    tr.append(el("td", r.change ? r.change : r.allowed ? "allowed" : "denied", r.allowed ? "ALLOWED" : "DENIED"));
    tr.append(el("td", r.reason));
    const cut = r.allowed ? [] : cutoffsOf(d, r.epoch, r.node);
    const cell = el("td", cut.map((c) => c.by + " " + c.ms + " ms").join(", "), "cutoffs");
    tr.append(cell);
    tbody.append(tr);
  }
}

function renderHistogram(lat, id, label, none) {
  const W = 420, H = 210, L = 30, B = 50, T = 16;
  const s = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": label });
  const max = Math.max(1, ...lat.counts);
  const n = lat.counts.length;
  const bw = (W - L - 10) / n;
  lat.counts.forEach((c, i) => {
    const bh = ((H - T - B) * c) / max;
    s.append(svg("rect", { x: L + i * bw + 2, y: H - B - bh, width: bw - 4, height: bh, class: "bar" }));
    if (c > 0) s.append(svg("text", { x: L + i * bw + bw / 2 - 4, y: H - B - bh - 3 }, c));
    const ms = (v) => (v >= 1000 ? v / 1000 + "s" : v + "");
    const label = i < lat.bounds_ms.length ? ms(lat.bounds_ms[i]) : ">" + ms(lat.bounds_ms[n - 2]);
    s.append(svg("text", { x: L + i * bw + 2, y: H - B + 14 }, label));
  });
  s.append(svg("line", { x1: L, x2: W - 10, y1: H - B, y2: H - B, class: "axis" }));
  const total = lat.counts.reduce((a, b) => a + b, 0);
  s.append(svg("text", { x: L, y: H - B + 28 }, "upper bound of each bar, ms"));
  const summary = svg("text", { x: L, y: H - 4 }, total === 0 ? none : total + " samples, largest " + lat.max_ms + " ms");
  summary.setAttribute("class", "summary");
  s.append(summary);
  document.getElementById(id).replaceChildren(s);
}

function renderMap(d) {
  const W = 420, H = 300, apartW = 110;
  const s = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "mesh map" });
  const inMesh = d.nodes.filter((n) => n.membership === "ALLOWED");
  const apart = d.nodes.filter((n) => n.membership !== "ALLOWED");
  const cx = (W - apartW) / 2, cy = H / 2, r = Math.min(cx, cy) - 35;
  const pos = {};
  inMesh.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, inMesh.length) - Math.PI / 2;
    pos[n.id] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  s.append(svg("rect", { x: W - apartW, y: 0, width: apartW, height: H, class: "apart" }));
  s.append(svg("text", { x: W - apartW + 8, y: 16 }, "denied / pending"));
  apart.forEach((n, i) => { pos[n.id] = [W - apartW / 2, 40 + i * 36]; });
  for (const [a, b] of d.pairs) {
    if (!pos[a] || !pos[b]) continue;
    s.append(svg("line", { x1: pos[a][0], y1: pos[a][1], x2: pos[b][0], y2: pos[b][1], class: "pair" }));
  }
  for (const n of d.nodes) {
    const [x, y] = pos[n.id];
    const g = svg("g", { "data-node": n.id });
    g.append(svg("circle", { cx: x, cy: y, r: 9, class: "node-" + n.membership.toLowerCase() }));
    g.append(svg("text", { x: x + 12, y: y + 4 }, n.id));
    s.append(g);
  }
  document.getElementById("map").replaceChildren(s);
  const more = d.pairs_total - d.pairs.length;
  document.getElementById("map-caption").textContent = d.pairs_total + (d.pairs_total === 1 ? " pair holds" : " pairs hold") + " keys in this epoch (" +
    (d.policy.topology === "hub_and_spoke" ? "hub and spoke" : "full mesh") + ")" + (more > 0 ? "; " + more + " not drawn" : "");
}

function render(d) {
  last = d;
  offsetMs = d.now_ms - Date.now();
  renderEpoch(d);
  renderNodes(d);
  renderPlot(d);
  renderLog(d);
  renderHistogram(d.node_cutoffs.latency, "node-histogram", "decision to cut-off histogram, as the nodes report it", "no cut-off reported yet");
  renderHistogram(d.cutoff_latency, "histogram", "decision to cut-off notice served histogram", "no denial served yet");
  renderMap(d);
  const u = document.getElementById("updated");
  u.className = "muted";
  u.textContent = "updated " + clock(d.now_ms);
}

async function poll() {
  try {
    const r = await fetch("/ui/data", { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    const u = document.getElementById("updated");
    u.className = "error";
    u.textContent = "cannot reach the controller: " + e.message;
  }
  setTimeout(poll, POLL_MS);
}

setInterval(tick, 250);
poll();
