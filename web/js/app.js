// The page: signing in, the plan preview, the expressions with live progress, one expression's
// graph, the agents and the operator delays. Plain modules, no build step.

import * as api from "./api.js";
import { drawDag, formatNumber } from "./dag.js";
import { EventStream } from "./stream.js";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["Ok", "Error", "Cancelled"]);

const state = {
  me: null,
  expressions: new Map(), // id -> the expression as GET /expression/{id} shows it
  detailId: null,
  detailNodes: null,
  agents: [],
  timers: [],
};

// ---- small helpers -------------------------------------------------------------------------

function notice(text) {
  $("notice").textContent = text || "";
}

function seconds(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

// 128 random bits as hex: a request id that makes a retried submit idempotent. (randomUUID
// needs a secure context; the page may be served over plain HTTP from another host.)
function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function debounce(fn, ms) {
  let t = null;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

// One debounced call per key: many events of one expression cost one fetch.
function keyed(fn, ms) {
  const timers = new Map();
  return (key) => {
    clearTimeout(timers.get(key));
    timers.set(key, setTimeout(() => {
      timers.delete(key);
      fn(key);
    }, ms));
  };
}

function report(e) {
  if (e instanceof api.ApiError && e.status === 401) {
    signedOut("Your session ended: sign in again.");
    return;
  }
  notice(e.message || String(e));
}

function workers() {
  return state.agents.filter((a) => a.alive).reduce((s, a) => s + (a.workers || 0), 0);
}

// ETA under the current delays: the critical path with unlimited workers, but never less than
// the whole work shared by the workers alive now.
function eta(criticalMs, workMs) {
  const w = workers();
  if (w === 0) return criticalMs;
  return Math.max(criticalMs, Math.ceil(workMs / w));
}

// ---- signing in and out --------------------------------------------------------------------

const stream = new EventStream({
  onEvent: (ev) => onEvent(ev),
  onResync: () => resync(),
  onState: (word) => {
    $("stream-state").textContent = word;
    $("stream-state").dataset.state = word;
  },
});

async function signedIn() {
  state.me = await api.call("GET", "/api/v1/me");
  $("user-name").textContent = state.me.login;
  $("user-role").textContent = state.me.admin ? "admin" : "user";
  $("whoami").hidden = false;
  $("auth").hidden = true;
  $("app").hidden = false;
  $("auth-password").value = "";
  for (const input of document.querySelectorAll("#delays-form input")) input.disabled = !state.me.admin;
  $("delays-save").hidden = !state.me.admin;
  $("delays-note").textContent = state.me.admin ? "" : "Only an admin changes the delays.";
  notice("");
  await Promise.all([loadExpressions(), loadAgents(), loadDelays()]);
  stream.start();
  state.timers.push(setInterval(tick, 250));
  state.timers.push(setInterval(() => loadAgents().catch(() => {}), 3000));
  $("expr-text").focus();
}

function signedOut(message) {
  stream.stop();
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  state.me = null;
  state.expressions.clear();
  closeDetail();
  $("expr-rows").textContent = "";
  $("whoami").hidden = true;
  $("app").hidden = true;
  $("auth").hidden = false;
  notice(message || "");
  $("auth-login").focus();
}

$("auth-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const action = ev.submitter ? ev.submitter.value : "login";
  const loginName = $("auth-login").value.trim();
  const password = $("auth-password").value;
  $("auth-error").textContent = "";
  try {
    if (action === "register") await api.register(loginName, password);
    else await api.login(loginName, password);
    await signedIn();
  } catch (e) {
    $("auth-error").textContent = e.message;
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api.logout();
  } catch (e) {
    /* signed out here either way */
  }
  signedOut("Signed out.");
});

// ---- the plan preview ----------------------------------------------------------------------

let previewSeq = 0;

async function preview() {
  const text = $("expr-text").value;
  const mine = ++previewSeq;
  const caret = $("plan-caret");
  if (!text.trim()) {
    $("plan-nodes").textContent = $("plan-depth").textContent = $("plan-eta").textContent = "–";
    $("plan-error").textContent = caret.textContent = "";
    $("expr-text").removeAttribute("aria-invalid");
    drawDag($("plan-dag"), []);
    return;
  }
  try {
    const p = await api.call("POST", "/api/v1/plan", { expression: text, source_order: $("expr-source-order").checked });
    if (mine !== previewSeq) return; // a later keystroke's answer wins
    $("plan-nodes").textContent = String(p.node_count);
    $("plan-depth").textContent = String(p.depth);
    $("plan-eta").textContent = seconds(eta(p.critical_path_ms, p.work_ms));
    $("plan-error").textContent = caret.textContent = "";
    $("expr-text").removeAttribute("aria-invalid");
    drawDag($("plan-dag"), p.nodes);
  } catch (e) {
    if (mine !== previewSeq) return;
    if (e.status === 400 && e.body.position) showSyntaxError(text, e.body);
    else report(e);
  }
}

function showSyntaxError(text, body) {
  $("plan-nodes").textContent = $("plan-depth").textContent = $("plan-eta").textContent = "–";
  $("plan-error").textContent = `Position ${body.position}: ${body.error}`;
  $("plan-error").dataset.position = String(body.position);
  $("plan-caret").textContent = `${text}\n${" ".repeat(Math.max(0, body.position - 1))}^`;
  $("expr-text").setAttribute("aria-invalid", "true");
}

const previewSoon = debounce(preview, 120);
$("expr-text").addEventListener("input", previewSoon);
$("expr-source-order").addEventListener("change", previewSoon);

let pending = null; // the text being submitted and its request id

$("expr-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("expr-text").value;
  if (!text.trim()) {
    $("expr-text").focus();
    return;
  }
  $("expr-submit").disabled = true;
  try {
    // A second click after a lost reply sends the same id: one expression, not two.
    if (!pending || pending.text !== text) pending = { text, uid: randomId() };
    const body = { expression: text, source_order: $("expr-source-order").checked, req_uid: pending.uid };
    const { expression } = await api.call("POST", "/expression", body);
    upsert(expression);
    pending = null;
    $("expr-text").value = "";
    preview();
    openDetail(expression.expression_id);
  } catch (e) {
    if (e.status === 400 && e.body.position) showSyntaxError(text, e.body);
    else report(e);
  } finally {
    $("expr-submit").disabled = false;
  }
});

// ---- the expressions -----------------------------------------------------------------------

async function loadExpressions() {
  const { expressions } = await api.call("GET", "/expression?limit=50");
  const seen = new Set();
  for (const e of expressions) {
    upsert(e);
    seen.add(e.expression_id);
  }
  render();
}

const refetch = keyed(async (id) => {
  try {
    const { expression } = await api.call("GET", `/expression/${id}`);
    upsert(expression);
  } catch (e) {
    if (e.status !== 404) report(e);
  }
}, 60);

const NODE_FINAL = new Set(["done", "failed", "cancelled"]);

function upsert(e) {
  state.expressions.set(e.expression_id, e);
  renderRow(e);
  if (state.detailId !== e.expression_id) return;
  renderDetailSummary();
  // Final, but the graph shown is older: its nodes are final too by now.
  if (FINAL.has(e.status) && state.detailNodes && state.detailNodes.some((n) => !NODE_FINAL.has(n.state))) {
    reloadNodes(e.expression_id);
  }
}

function render() {
  const ids = [...state.expressions.keys()].sort((a, b) => b - a);
  const body = $("expr-rows");
  for (const id of ids) body.appendChild(rowOf(id));
  $("expr-empty").hidden = ids.length > 0;
  for (const id of ids) renderRow(state.expressions.get(id));
}

// A real button (focusable, Enter and Space work), named for screen readers by label.
function button(className, text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function rowOf(id) {
  let tr = document.querySelector(`#expr-rows tr[data-expression-id="${id}"]`);
  if (tr) return tr;
  tr = document.createElement("tr");
  tr.dataset.expressionId = String(id);
  for (const cls of ["id", "text", "status", "progress", "time", "result", "actions"]) {
    const td = document.createElement("td");
    td.className = cls;
    tr.appendChild(td);
  }
  tr.querySelector(".text").classList.add("mono");
  const progress = document.createElement("progress");
  const label = document.createElement("span");
  tr.querySelector(".progress").append(progress, " ", label);
  tr.querySelector(".actions").append(
    button("view secondary", "View", `View expression ${id}`, () => openDetail(id)),
    " ",
    button("cancel danger", "Cancel", `Cancel expression ${id}`, () => cancelExpression(id)),
  );
  // Newest first: before the first row with a smaller id.
  const body = $("expr-rows");
  const next = [...body.children].find((r) => Number(r.dataset.expressionId) < id);
  body.insertBefore(tr, next || null);
  $("expr-empty").hidden = true;
  return tr;
}

// From acceptance to the end, or to now while it runs. The server's clock and this one may
// differ a little; an unfinished expression never shows less than zero.
function elapsedOf(e) {
  const start = e.created_at_ms ?? Date.parse(e.created_at);
  if (!start) return null;
  const end = e.eval_finished_at_ms ?? Date.now();
  return Math.max(0, end - start);
}

function renderRow(e) {
  const tr = rowOf(e.expression_id);
  tr.dataset.status = e.status;
  tr.querySelector(".id").textContent = String(e.expression_id);
  tr.querySelector(".text").textContent = e.expression_value;
  const status = tr.querySelector(".status");
  status.textContent = e.status;
  status.className = `status status-${e.status.replace(/\s+/g, "-").toLowerCase()}`;
  const progress = tr.querySelector("progress");
  progress.max = Math.max(1, e.node_count);
  progress.value = e.node_count ? e.nodes_done : e.status === "Ok" ? 1 : 0;
  progress.setAttribute("aria-label", `${e.nodes_done} of ${e.node_count} nodes done`);
  tr.querySelector(".progress span").textContent = `${e.nodes_done}/${e.node_count}`;
  tr.querySelector(".time").textContent = `${seconds(elapsedOf(e))} / ETA ${seconds(e.critical_path_ms)}`;
  const result = tr.querySelector(".result");
  result.textContent = e.status === "Ok" ? formatNumber(e.result) : e.status === "Error" ? e.error_msg : "";
  tr.querySelector(".cancel").hidden = FINAL.has(e.status);
}

// The clocks of unfinished expressions move without asking the server.
function tick() {
  for (const e of state.expressions.values()) {
    if (FINAL.has(e.status)) continue;
    const tr = document.querySelector(`#expr-rows tr[data-expression-id="${e.expression_id}"]`);
    if (tr) tr.querySelector(".time").textContent = `${seconds(elapsedOf(e))} / ETA ${seconds(e.critical_path_ms)}`;
  }
}

async function cancelExpression(id) {
  try {
    const { expression } = await api.call("DELETE", `/expression/${id}`);
    upsert(expression);
    if (state.detailId === id) reloadNodes(id);
  } catch (e) {
    if (e.status === 409) refetch(id); // it finished first
    else report(e);
  }
}

// ---- events --------------------------------------------------------------------------------

function onEvent(ev) {
  const id = ev.expression_id;
  if (!id) return;
  const e = state.expressions.get(id);
  if (e && ev.kind === "finished") Object.assign(e, { status: "Ok", result: ev.result });
  if (e && ev.kind === "node") e.nodes_done = Math.min(e.node_count, e.nodes_done + 1);
  if (e) renderRow(e);
  refetch(id);
  if (state.detailId === id) {
    if (ev.kind === "node" && state.detailNodes) {
      const n = state.detailNodes.find((x) => x.id === ev.node_id);
      if (n) Object.assign(n, { state: "done", value: ev.value });
      drawDag($("detail-dag"), state.detailNodes);
    }
    reloadNodes(id);
  }
}

// The stream could not resume (or there is none): reload what is shown.
async function resync() {
  if (!state.me) return;
  try {
    await loadExpressions();
    if (state.detailId !== null) reloadNodes(state.detailId);
  } catch (e) {
    report(e);
  }
}

// ---- one expression's graph ----------------------------------------------------------------

const reloadNodes = keyed(async (id) => {
  if (state.detailId !== id) return;
  try {
    const body = await api.call("GET", `/expression/${id}/nodes`);
    if (state.detailId !== id) return;
    state.detailNodes = body.nodes;
    upsert(body.expression);
    drawDag($("detail-dag"), body.nodes);
    renderDetailSummary();
  } catch (e) {
    report(e);
  }
}, 80);

function openDetail(id) {
  state.detailId = id;
  state.detailNodes = null;
  $("detail").hidden = false;
  $("detail-id").textContent = `#${id}`;
  const e = state.expressions.get(id);
  $("detail-text").textContent = e ? e.expression_value : "";
  drawDag($("detail-dag"), []);
  renderDetailSummary();
  reloadNodes(id);
  $("detail-title").scrollIntoView({ block: "nearest" });
}

function closeDetail() {
  state.detailId = null;
  state.detailNodes = null;
  $("detail").hidden = true;
}

function renderDetailSummary() {
  const e = state.expressions.get(state.detailId);
  if (!e) return;
  const counts = {};
  for (const n of state.detailNodes || []) counts[n.state] = (counts[n.state] || 0) + 1;
  const parts = Object.entries(counts).map(([k, v]) => `${v} ${k}`);
  let text = `${e.status}: ${e.nodes_done} of ${e.node_count} nodes done`;
  if (parts.length) text += ` (${parts.join(", ")})`;
  if (e.status === "Ok") text += `. Result: ${formatNumber(e.result)}`;
  if (e.status === "Error") text += `. ${e.error_msg}`;
  $("detail-summary").textContent = text;
  $("detail-summary").dataset.status = e.status;
  $("detail-cancel").hidden = FINAL.has(e.status);
}

$("detail-cancel").addEventListener("click", () => {
  if (state.detailId !== null) cancelExpression(state.detailId);
});
$("detail-close").addEventListener("click", () => {
  const id = state.detailId;
  closeDetail();
  const view = document.querySelector(`#expr-rows tr[data-expression-id="${id}"] .view`);
  if (view) view.focus();
});

// ---- agents --------------------------------------------------------------------------------

async function loadAgents() {
  const body = await api.call("GET", "/agent");
  state.agents = body.agents || [];
  const rows = $("agent-rows");
  rows.textContent = "";
  for (const a of state.agents) {
    const tr = document.createElement("tr");
    tr.dataset.alive = String(a.alive);
    const cells = [
      a.agent_unique_name,
      a.alive ? "alive" : "silent",
      `${a.busy ?? 0} of ${a.workers ?? 0} workers`,
      a.last_heartbeat_at ? new Date(a.last_heartbeat_at).toLocaleTimeString() : "–",
    ];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
  const alive = state.agents.filter((a) => a.alive);
  const busy = alive.reduce((s, a) => s + (a.busy || 0), 0);
  $("agents-summary").textContent = `${alive.length} alive, ${busy} of ${workers()} workers busy`;
}

$("agents-reload").addEventListener("click", () => loadAgents().catch(report));

// ---- operator delays -----------------------------------------------------------------------

async function loadDelays() {
  const { operation_durations: list } = await api.call("GET", "/duration");
  for (const d of list) {
    const input = document.querySelector(`#delays-form input[data-op="${CSS.escape(d.operation_name)}"]`);
    if (input) input.value = String(d.operation_duration_ms);
  }
}

$("delays-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = {};
  for (const input of document.querySelectorAll("#delays-form input")) {
    const v = Number(input.value);
    if (!Number.isInteger(v) || v < 0 || v > 65535) {
      $("delays-note").textContent = `${input.labels[0].textContent}: a whole number of ms from 0 to 65535`;
      input.focus();
      return;
    }
    body[input.dataset.op] = v;
  }
  try {
    await api.call("POST", "/duration", body);
    await loadDelays();
    $("delays-note").textContent = "Saved: new expressions use these delays.";
    previewSoon();
  } catch (e) {
    $("delays-note").textContent = e.message;
  }
});

// ---- start ---------------------------------------------------------------------------------

async function boot() {
  try {
    if (await api.refresh()) {
      await signedIn();
      return;
    }
  } catch (e) {
    notice(e.message);
  }
  signedOut();
}

boot();
