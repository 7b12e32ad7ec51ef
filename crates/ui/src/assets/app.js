// Caravan's operator page. Plain JS, no build step. Every value that comes from the cluster is
// inserted with textContent / text nodes, never as HTML: member names and tags are chosen by
// whoever joins gossip. Tokens travel only in the X-Nomad-Token header, never in a URL.
"use strict";

const TOKEN_KEY = "caravan.token";
const POLL_MS = 1000;
// Node heartbeats come as ages the page advances itself, so they are asked for less often.
const BEATS_MS = 5000;
const WAIT = "10s";
const MAX_LOG_LINES = 2000;

// ---- small helpers -------------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

// An element with text children only (strings become text nodes).
function el(tag, cls, ...children) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  for (const c of children) {
    e.appendChild(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  }
  return e;
}

function statusCell(text) {
  const s = String(text == null ? "" : text);
  return el("td", "status-" + s.toLowerCase().replace(/[^a-z]/g, ""), s);
}

function fillTable(table, rows) {
  const body = table.tBodies[0];
  const frag = document.createDocumentFragment();
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.appendChild(c instanceof Node && c.tagName === "TD" ? c : el("td", null, c));
    frag.appendChild(tr);
  }
  body.replaceChildren(frag);
}

function fillFacts(table, pairs) {
  fillTable(table, []);
  const body = table.tBodies[0];
  for (const [k, v] of pairs) {
    const tr = document.createElement("tr");
    tr.appendChild(el("th", null, k));
    tr.appendChild(v instanceof Node ? v : el("td", null, v));
    body.appendChild(tr);
  }
}

function showError(id, message) {
  const p = $(id);
  if (!message) { p.hidden = true; p.textContent = ""; return; }
  p.textContent = message;
  p.hidden = false;
}

function stamp(id) { $(id).textContent = "updated " + new Date().toLocaleTimeString(); }
function short(id) { return String(id || "").slice(0, 8); }
function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = token();
  if (t) h["X-Nomad-Token"] = t;
  return h;
}

// A failed call, with the agent's own reason (its plain-text error body).
class ApiFailure extends Error {
  constructor(status, text, path) {
    const why = status === 403
      ? "Permission denied" + (token() ? " for this token" : " (no token set)") +
        (text === "Permission denied" ? "" : ": " + text)
      : "HTTP " + status + ": " + text;
    super(path + ": " + why);
    this.status = status;
    this.text = text;
  }
}

async function api(path, opts) {
  const o = opts || {};
  const resp = await fetch(path, {
    method: o.method || "GET",
    headers: headers(o.body ? { "Content-Type": "application/json" } : null),
    body: o.body,
    signal: o.signal || viewAbort.signal,
    cache: "no-store",
    credentials: "omit",
  });
  const text = await resp.text();
  if (!resp.ok) throw new ApiFailure(resp.status, text.trim() || resp.statusText, path);
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = text; }
  }
  return { data, index: Number(resp.headers.get("X-Nomad-Index") || 0) };
}

// ---- live loops ----------------------------------------------------------------------------
// A loop runs while its view is shown and the token has not changed since it started.

let generation = 0;
let currentView = "";
// Aborts the requests of the view being left (its blocking queries would hold connections).
let viewAbort = new AbortController();

function newGeneration() {
  generation += 1;
  viewAbort.abort();
  viewAbort = new AbortController();
}

function alive(gen, view) { return gen === generation && currentView === view; }

// Polls `step` every POLL_MS (gossip views have no index to block on).
async function poll(view, step) {
  const gen = generation;
  while (alive(gen, view)) {
    await step();
    await sleep(POLL_MS);
  }
}

// A blocking query loop: `?index=N&wait=WAIT`, X-Nomad-Index carried forward.
async function block(view, path, onData, onError) {
  const gen = generation;
  let index = 0;
  while (alive(gen, view)) {
    const sep = path.includes("?") ? "&" : "?";
    try {
      const r = await api(index ? path + sep + "index=" + index + "&wait=" + WAIT : path);
      if (!alive(gen, view)) return;
      index = r.index > index ? r.index : index;
      onData(r.data);
    } catch (e) {
      if (!alive(gen, view)) return;
      onError(e);
      index = 0;
      await sleep(POLL_MS * 2);
    }
  }
}

// ---- what the token may do ----------------------------------------------------------------
// Controls that write are shown only once a request that cannot change anything says the token
// may use them; the element then carries data-probed ("may" / "may not").

function gate(view, id, probe) {
  const gen = generation;
  const e = $(id);
  e.hidden = true;
  delete e.dataset.probed;
  probe().then((may) => {
    if (!alive(gen, view)) return;
    e.hidden = !may;
    e.dataset.probed = may ? "may" : "may not";
  });
}

// An empty PUT to an endpoint that checks the token before it reads the body (schedulers/config,
// spec 11.2; /v1/jobs) is answered 403 without the right and 400 with it, and changes nothing
// either way. A client agent answers schedulers/config with "Server only endpoint".
async function mayWrite(path) {
  try {
    await api(path, { method: "PUT", body: "" });
    return true;
  } catch (e) {
    return e.status === 400 && !/Server only endpoint/.test(e.text);
  }
}

// A read that passes the given rules (pprof/cmdline: agent:write and enable_debug).
async function mayRead(path) {
  try { await api(path); return true; } catch (e) { return false; }
}

// ---- Cluster -------------------------------------------------------------------------------

const cluster = { nodes: null, allocs: null, beats: null };

// "4.2s ago", from nanoseconds.
function ago(ns) {
  const s = ns / 1e9;
  if (s < 60) return s.toFixed(1) + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m" + Math.floor(s % 60) + "s ago";
  return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m ago";
}

// Each node's last heartbeat as the leader saw it (ages, so the browser's clock does not matter).
async function clusterBeats() {
  const gen = generation;
  while (alive(gen, "cluster")) {
    let ok = true;
    try {
      const list = (await api("/v1/nodes/heartbeats")).data || [];
      const at = performance.now();
      cluster.beats = new Map(list.map((b) => [b.NodeID, { since: b.SinceLastHeartbeat, ttl: b.HeartbeatTTL, at }]));
    } catch (e) {
      cluster.beats = null;
      ok = false;
    }
    if (!alive(gen, "cluster")) return;
    drawNodes();
    await sleep(ok ? BEATS_MS : BEATS_MS * 2);
  }
}

function beatCell(id) {
  if (!cluster.beats) return "?";
  const b = cluster.beats.get(id);
  if (!b) return "not since the leader took over";
  return ago(b.since + (performance.now() - b.at) * 1e6) + " (TTL " + (b.ttl / 1e9).toFixed(0) + "s)";
}

async function clusterServers() {
  try {
    const members = (await api("/v1/agent/members")).data;
    let raft = null;
    let raftError = "";
    try { raft = (await api("/v1/operator/raft/configuration")).data; } catch (e) { raftError = e.message; }
    let self = null;
    try { self = (await api("/v1/agent/self")).data; } catch (e) { /* shown without it */ }
    // Autopilot's health has every voter's last contact; an unhealthy cluster answers 429
    // with the same body.
    const health = new Map();
    let report = null;
    try { report = (await api("/v1/operator/autopilot/health")).data; } catch (e) {
      if (e.status === 429) { try { report = JSON.parse(e.text); } catch (_) { report = null; } }
    }
    for (const s of (report && report.Servers) || []) health.set(s.Address, s);
    const byAddr = new Map();
    for (const s of (raft && raft.Servers) || []) byAddr.set(s.Address, s);
    const selfName = self && self.member ? self.member.Name : "";
    const lastContact = self && self.stats && self.stats.raft ? self.stats.raft.last_contact : "";
    const rows = [];
    for (const m of (members && members.Members) || []) {
      const tags = m.Tags || {};
      const rpc = (tags.rpc_addr || m.Addr) + ":" + tags.port;
      const r = byAddr.get(rpc);
      const role = r ? (r.Leader ? "leader" : (r.Voter ? "follower" : "non-voter")) : (raft ? "not in Raft" : "?");
      let contact = "";
      const h = health.get(rpc);
      if (h) contact = h.Leader ? "(leader)" : (h.LastContact || "?") + (h.Healthy ? "" : " (unhealthy)");
      else if (m.Name === selfName) contact = r && r.Leader ? "(leader)" : (lastContact ? lastContact + " (this agent)" : "");
      rows.push([m.Name, m.Addr + ":" + m.Port, statusCell(m.Status), tags.region || "", tags.dc || "", statusCell(role), contact]);
    }
    rows.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    fillTable($("servers"), rows);
    drawNodes(); // the heartbeat ages advance every second
    showError("servers-error", raftError);
    stamp("cluster-updated");
  } catch (e) {
    fillTable($("servers"), []);
    showError("servers-error", e.message);
  }
}

function drawNodes() {
  const counts = new Map();
  for (const a of cluster.allocs || []) {
    if (a.ClientStatus === "complete" || a.ClientStatus === "failed" || a.ClientStatus === "lost") continue;
    counts.set(a.NodeID, (counts.get(a.NodeID) || 0) + 1);
  }
  const rows = (cluster.nodes || []).map((n) => [
    n.Name, short(n.ID), n.Datacenter, n.NodeClass || "", statusCell(n.Status), beatCell(n.ID),
    cluster.allocs ? String(counts.get(n.ID) || 0) : "?",
  ]);
  fillTable($("nodes"), rows);
  if (cluster.nodes) stamp("cluster-updated");
}

function startCluster() {
  poll("cluster", clusterServers);
  clusterBeats();
  const nodesFailed = (e) => { cluster.nodes = null; fillTable($("nodes"), []); showError("nodes-error", e.message); };
  block("cluster", "/v1/nodes", (d) => { cluster.nodes = d; showError("nodes-error", ""); drawNodes(); }, nodesFailed);
  block("cluster", "/v1/allocations", (d) => { cluster.allocs = d; drawNodes(); }, () => { cluster.allocs = null; drawNodes(); });
}

// ---- Agent ---------------------------------------------------------------------------------

let lastWorkers = 0;

async function agentStep() {
  try {
    const self = (await api("/v1/agent/self")).data;
    const c = self.config || {};
    const st = self.stats || {};
    const nomad = st.nomad || {};
    const raft = st.raft || {};
    const client = st.client || {};
    const facts = [
      ["Member", self.member ? self.member.Name : ""],
      ["Gossip status", statusCell(self.member ? self.member.Status : "")],
      ["Region / datacenter", (c.Region || "") + " / " + (c.Datacenter || "")],
      ["Version", c.Version ? (c.Version.Version || "") + (c.Version.VersionPrerelease ? "-" + c.Version.VersionPrerelease : "") : ""],
      ["Server", c.Server && c.Server.Enabled ? "yes" : "no"],
      ["Client", c.Client && c.Client.Enabled ? "yes" : "no"],
      ["ACLs", c.ACL && c.ACL.Enabled ? "enabled" : "disabled"],
      ["HTTP address", c.AdvertiseAddrs ? c.AdvertiseAddrs.HTTP : ""],
    ];
    if (nomad.server === "true") {
      facts.push(["Leader", nomad.leader_addr || ""]);
      facts.push(["Raft state", statusCell(raft.state === "Leader" ? "leader" : (raft.state || ""))]);
      facts.push(["Raft term / applied", (raft.term || "") + " / " + (raft.applied_index || "")]);
      facts.push(["Raft last contact", raft.last_contact || ""]);
    }
    if (client.node_id) {
      facts.push(["Client node", client.node_id]);
      facts.push(["Last heartbeat", client.last_heartbeat ? client.last_heartbeat + " ago" : ""]);
      facts.push(["Allocations", client.num_allocations || "0"]);
    }
    fillFacts($("agent-facts"), facts);
    showError("agent-error", "");
    stamp("agent-updated");
  } catch (e) {
    fillFacts($("agent-facts"), []);
    showError("agent-error", e.message);
  }
  try {
    // 200 healthy, 500 with the same body when not: both are worth showing.
    const resp = await fetch("/v1/agent/health", { headers: headers(), cache: "no-store", credentials: "omit" });
    const text = await resp.text();
    let h = null;
    try { h = JSON.parse(text); } catch (e) { h = null; }
    const rows = [];
    if (h && typeof h === "object") {
      for (const k of ["server", "client"]) {
        if (h[k]) rows.push([k, statusCell(h[k].ok ? "ok" : "bad"), h[k].message]);
      }
      fillTable($("health"), rows);
    } else {
      fillTable($("health"), [["health", statusCell("bad"), text]]);
    }
  } catch (e) {
    fillTable($("health"), []);
  }
  try {
    const w = (await api("/v1/agent/schedulers")).data;
    const rows = (w.schedulers || []).map((s) => [
      short(s.id), statusCell(s.status), s.workload_status, (s.enabled_schedulers || []).join(", "), s.started,
    ]);
    fillTable($("workers"), rows);
    const cfg = (await api("/v1/agent/schedulers/config")).data;
    const num = $("sched-num");
    const en = $("sched-enabled");
    if (document.activeElement !== num) num.value = cfg.num_schedulers;
    if (document.activeElement !== en) en.value = (cfg.enabled_schedulers || []).join(",");
    if (cfg.num_schedulers > 0) lastWorkers = cfg.num_schedulers;
    showError("workers-error", "");
  } catch (e) {
    fillTable($("workers"), []);
    showError("workers-error", e.message);
  }
}

async function putSchedulers(num) {
  const enabled = $("sched-enabled").value.split(",").map((s) => s.trim()).filter((s) => s);
  const body = JSON.stringify({ num_schedulers: num, enabled_schedulers: enabled });
  try {
    const r = (await api("/v1/agent/schedulers/config", { method: "PUT", body })).data;
    $("sched-result").textContent = "now " + r.num_schedulers + " workers";
    showError("workers-error", "");
  } catch (e) {
    $("sched-result").textContent = "";
    showError("workers-error", e.message);
  }
  agentStep();
}

function startAgent() {
  gate("agent", "sched-form", () => mayWrite("/v1/agent/schedulers/config"));
  poll("agent", agentStep);
}

// ---- Jobs ----------------------------------------------------------------------------------

let selectedJob = "";
let nodeNames = new Map();

function showJob(id) {
  selectedJob = id;
  $("job-detail").hidden = false;
  $("job-detail-id").textContent = id;
  refreshJob();
}

async function refreshJob() {
  if (!selectedJob) return;
  const id = encodeURIComponent(selectedJob);
  try {
    try {
      const nodes = (await api("/v1/nodes")).data || [];
      nodeNames = new Map(nodes.map((n) => [n.ID, n.Name]));
    } catch (e) { /* node names are a nicety */ }
    const evals = (await api("/v1/job/" + id + "/evaluations")).data || [];
    fillTable($("job-evals"), evals.map((e) => [short(e.ID), statusCell(e.Status), e.TriggeredBy, e.StatusDescription]));
    const allocs = (await api("/v1/job/" + id + "/allocations")).data || [];
    fillTable($("job-allocs"), allocs.map((a) => [
      short(a.ID), a.Name, (nodeNames.get(a.NodeID) || "") + " (" + short(a.NodeID) + ")", a.DesiredStatus, statusCell(a.ClientStatus),
    ]));
    showError("job-detail-error", "");
  } catch (e) {
    fillTable($("job-evals"), []);
    fillTable($("job-allocs"), []);
    showError("job-detail-error", e.message);
  }
}

function drawJobs(jobs) {
  const body = $("jobs").tBodies[0];
  const frag = document.createDocumentFragment();
  for (const j of jobs || []) {
    const tr = document.createElement("tr");
    tr.appendChild(el("td", null, j.ID));
    tr.appendChild(el("td", null, j.Type));
    tr.appendChild(statusCell(j.Status));
    tr.appendChild(el("td", null, String(j.Priority)));
    const b = el("button", null, "Details");
    b.type = "button";
    b.addEventListener("click", () => showJob(j.ID));
    tr.appendChild(el("td", null, b));
    frag.appendChild(tr);
  }
  body.replaceChildren(frag);
  stamp("jobs-updated");
  refreshJob();
}

function startJobs() {
  gate("jobs", "job-register", () => mayWrite("/v1/jobs"));
  block("jobs", "/v1/jobs", (d) => { showError("jobs-error", ""); drawJobs(d); },
    (e) => { drawJobs([]); showError("jobs-error", e.message); });
}

async function registerJob(ev) {
  ev.preventDefault();
  const out = $("job-result");
  let parsed;
  try { parsed = JSON.parse($("job-json").value); } catch (e) {
    out.textContent = "not JSON: " + e.message;
    return;
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) { out.textContent = "expected a JSON object"; return; }
  const body = JSON.stringify(parsed.Job ? parsed : { Job: parsed });
  try {
    const r = (await api("/v1/jobs", { method: "PUT", body })).data;
    out.textContent = "registered; evaluation " + (r && r.EvalID ? r.EvalID : "");
  } catch (e) {
    out.textContent = e.message;
  }
}

// ---- Logs ----------------------------------------------------------------------------------

let logAbort = null;

function appendLog(line) {
  const box = $("log-lines");
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.appendChild(el("div", null, line));
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  if (atEnd) box.scrollTop = box.scrollHeight;
}

function stopLogs() {
  if (logAbort) logAbort.abort();
  logAbort = null;
  $("log-toggle").textContent = "Follow";
  $("log-state").textContent = "paused";
}

function startLogs() {
  gate("logs", "downloads", () => mayRead("/v1/agent/pprof/cmdline"));
  followLogs();
}

async function followLogs() {
  stopLogs();
  const ctl = new AbortController();
  logAbort = ctl;
  $("log-toggle").textContent = "Pause";
  const level = $("log-level").value;
  $("log-state").textContent = "following at " + level;
  showError("logs-error", "");
  try {
    const resp = await fetch("/v1/agent/monitor?plain=true&log_level=" + encodeURIComponent(level), {
      headers: headers(), signal: ctl.signal, cache: "no-store", credentials: "omit",
    });
    if (!resp.ok) throw new ApiFailure(resp.status, (await resp.text()).trim(), "/v1/agent/monitor");
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += dec.decode(value, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop();
      for (const l of lines) if (l) appendLog(l);
    }
    if (logAbort === ctl) { $("log-state").textContent = "stream ended"; logAbort = null; $("log-toggle").textContent = "Follow"; }
  } catch (e) {
    if (ctl.signal.aborted) return;
    showError("logs-error", e.message);
    if (logAbort === ctl) { logAbort = null; $("log-toggle").textContent = "Follow"; $("log-state").textContent = "stopped"; }
  }
}

async function download(path, filename) {
  const state = $("download-state");
  state.textContent = "fetching " + filename + "…";
  try {
    const resp = await fetch(path, { headers: headers(), cache: "no-store", credentials: "omit" });
    if (!resp.ok) throw new ApiFailure(resp.status, (await resp.text()).trim(), path.split("?")[0]);
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    state.textContent = filename + " (" + blob.size + " bytes)";
  } catch (e) {
    state.textContent = "";
    showError("logs-error", e.message);
  }
}

// ---- navigation and token ------------------------------------------------------------------

const starters = { cluster: startCluster, agent: startAgent, jobs: startJobs, logs: startLogs };

function route() {
  const want = (location.hash || "#cluster").slice(1);
  const view = Object.prototype.hasOwnProperty.call(starters, want) ? want : "cluster";
  if (view === currentView) return;
  if (currentView === "logs") stopLogs();
  currentView = view;
  newGeneration();
  for (const v of Object.keys(starters)) {
    $("view-" + v).hidden = v !== view;
    $("nav-" + v).classList.toggle("active", v === view);
  }
  starters[view]();
}

function restart() {
  // A new token: every view starts over with it, and nothing the old token read stays shown.
  if (currentView === "logs") stopLogs();
  currentView = "";
  for (const t of document.querySelectorAll("tbody")) t.replaceChildren();
  route();
  tokenState();
}

function tokenState() { $("token-state").textContent = token() ? "token set" : "no token"; }

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token").value.trim();
    if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    restart();
  });
  $("token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); restart(); });
  $("sched-form").addEventListener("submit", (ev) => { ev.preventDefault(); putSchedulers(Number($("sched-num").value)); });
  $("sched-pause").addEventListener("click", () => putSchedulers(0));
  $("sched-resume").addEventListener("click", () => putSchedulers(lastWorkers || 1));
  $("job-form").addEventListener("submit", registerJob);
  $("log-toggle").addEventListener("click", () => (logAbort ? stopLogs() : followLogs()));
  $("log-level").addEventListener("change", () => { if (logAbort) followLogs(); });
  $("log-clear").addEventListener("click", () => $("log-lines").replaceChildren());
  $("profile-download").addEventListener("click", () => {
    const s = Math.max(1, Math.min(60, Number($("profile-seconds").value) || 5));
    download("/v1/agent/pprof/profile?seconds=" + s, "caravan-cpu.pprof");
  });
  $("threads-download").addEventListener("click", () => download("/v1/agent/pprof/goroutine?debug=2", "caravan-threads.txt"));
  window.addEventListener("hashchange", route);
  tokenState();
  route();
});
