// agentvisor dashboard: polls /v1/dashboard/state, follows one agent's pane over server-sent
// events, and, with the operator token, sends messages and check-ins through the host API.
// Plain JS, no build step. Every text from the server is set with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "agentvisor.operatorToken";
const REFRESH_MS = 2000;

const ui = {
  project: null,
  role: null,
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  stream: null,
  timer: null,
  now: Date.now() / 1000,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// --- formatting ---------------------------------------------------------------------------------

function span(seconds) {
  const s = Math.abs(seconds);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function relative(epoch) {
  if (!epoch) return "–";
  const delta = epoch - ui.now;
  if (Math.abs(delta) < 1) return "now";
  return delta > 0 ? `in ${span(delta)}` : `${span(delta)} ago`;
}

function stamp(epoch) {
  if (!epoch) return "";
  const date = new Date(epoch * 1000);
  return date.toLocaleString([], { hour12: false });
}

function timeCell(epoch) {
  return el("td", { class: "time", title: stamp(epoch) }, relative(epoch));
}

function shortTime(epoch) {
  const date = new Date(epoch * 1000);
  return date.toLocaleTimeString([], { hour12: false });
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text || ""}` }, text || "–");
}

function number(value, unit, digits) {
  if (value === null || value === undefined) return "–";
  return `${value.toFixed(digits)}${unit}`;
}

// --- talking to the server ----------------------------------------------------------------------

async function api(path, options) {
  const opts = options || {};
  const headers = Object.assign({}, opts.headers || {});
  const token = opts.token !== undefined ? opts.token : ui.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (opts.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method: opts.method || "GET", headers, body: opts.body,
    cache: "no-store" });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = new Error((data && data.detail) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function notice(text, kind) {
  const box = $("notice");
  box.textContent = text || "";
  box.className = `notice ${kind || ""}`;
  box.hidden = !text;
}

function setConnection(ok, detail) {
  const dot = $("connection");
  dot.className = `connection ${ok ? "ok" : "down"}`;
  dot.textContent = ok ? "live" : "offline";
  dot.title = ok ? "updated every 2 s" : detail || "the server does not answer";
}

async function refresh() {
  clearTimeout(ui.timer);
  const query = ui.project ? `?project=${encodeURIComponent(ui.project)}` : "";
  try {
    const data = await api(`/v1/dashboard/state${query}`);
    render(data);
    setConnection(true);
    if ($("notice").dataset.from === "refresh") notice("");
  } catch (error) {
    setConnection(false, error.message);
    if (error.status === 401 && ui.token) {
      lock();
      notice("The stored token was refused; paste the operator token again.", "error");
    } else if (error.status === 404 && ui.project) {
      ui.project = null;
    } else {
      notice(error.message, "error");
      $("notice").dataset.from = "refresh";
    }
  } finally {
    ui.timer = setTimeout(refresh, REFRESH_MS);
  }
}

// --- rendering ----------------------------------------------------------------------------------

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderProjects(data) {
  const select = $("project");
  const names = data.projects.map((p) => p.name);
  const current = Array.from(select.options).map((o) => o.value);
  if (names.join("\n") !== current.join("\n")) {
    select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  }
  select.disabled = names.length === 0;
  if (data.project) select.value = data.project.name;

  const summary = $("project-summary");
  const project = data.projects.find((p) => data.project && p.name === data.project.name);
  if (!project) {
    summary.replaceChildren(el("span", { class: "muted" }, "no project yet"));
    return;
  }
  const parts = [badge(project.state, `project-${project.state}`)];
  const counts = [
    [project.messages.queued || 0, "queued"],
    [project.messages.leased || 0, "leased"],
    [project.failed, "failed"],
    [project.checkins_pending, "check-ins pending"],
  ];
  for (const [count, what] of counts) {
    parts.push(el("span", { class: `count ${what === "failed" && count ? "bad" : ""}` },
      el("b", {}, count), ` ${what}`));
  }
  summary.replaceChildren(...parts);
  summary.title = project.path || "";
}

function renderAgents(data) {
  const tbody = $("agents").tBodies[0];
  const rows = data.agents.map((agent) => {
    const pending = agent.queued + agent.leased;
    const memory = agent.memory_mb === null ? "–"
      : agent.memory_limit_mb ? `${agent.memory_mb.toFixed(0)} / ${agent.memory_limit_mb.toFixed(0)} MB`
        : `${agent.memory_mb.toFixed(0)} MB`;
    const row = el("tr", {
      "data-role": agent.role,
      class: agent.role === ui.role ? "selected clickable" : "clickable",
      title: `watch the pane of ${agent.role}`,
      tabindex: "0",
    },
      el("td", { class: "role" }, agent.role, el("span", { class: "profile" }, agent.profile)),
      el("td", { class: "state" }, badge(agent.state),
        agent.paused_until && agent.state === "paused"
          ? el("span", { class: "muted small" }, ` until ${shortTime(agent.paused_until)}`) : null),
      timeCell(agent.last_activity_at),
      timeCell(agent.next_checkin_at),
      el("td", { class: "num" }, pending ? String(pending) : "0"),
      el("td", { class: "num" }, number(agent.cpu_percent, " %", 1)),
      el("td", { class: "num" }, memory),
      el("td", { class: "muted" }, agent.sandbox || "–",
        agent.restarts ? ` (${agent.restarts} restarts)` : ""),
    );
    row.addEventListener("click", () => watch(agent.role));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") watch(agent.role);
    });
    return row;
  });
  fill(tbody, rows);
  $("agents-empty").hidden = rows.length > 0;
  const note = $("sandbox-note");
  note.textContent = data.sandboxes.error ? `Docker: ${data.sandboxes.error}` : "";
  note.className = data.sandboxes.error ? "sub bad" : "sub";
}

// --- model usage ----------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a", "#e85aad"];

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function budgetText(usage) {
  const b = usage.budget;
  if (!b) return "";
  const parts = [];
  if (b.agent_tokens_per_day) parts.push(`${b.agent_tokens_per_day} tokens per agent per day`);
  if (b.project_tokens) parts.push(`${usage.project_tokens} of ${b.project_tokens} project tokens`);
  if (b.project_hours) parts.push(`${(usage.project_age_s / 3600).toFixed(1)} of ${b.project_hours} h`);
  return parts.length ? `budget: ${parts.join(", ")} (agentvisor budget ${usage.project} ...)`
    : `no budget (agentvisor budget ${usage.project} --agent-tokens-per-day N)`;
}

function renderUsage(data) {
  const usage = data.usage;
  const agents = usage ? usage.agents : [];
  const rows = agents.map((a) => el("tr", {},
    el("td", { class: "role" }, a.role),
    el("td", { class: "num" }, String(a.requests)),
    el("td", { class: "num" }, String(a.input_tokens)),
    el("td", { class: "num" }, String(a.output_tokens)),
    el("td", { class: "num" }, String(a.cache_read_tokens)),
    el("td", { class: "num" }, String(a.tokens)),
    el("td", { class: "num" }, String(a.rate_limited)),
    el("td", { class: "muted small" }, a.paused_until
      ? `${a.paused_reason || "usage limit"} (until ${shortTime(a.paused_until)})` : ""),
  ));
  fill($("usage").tBodies[0], rows);
  $("usage-empty").hidden = agents.some((a) => a.requests > 0);
  $("usage-budget").textContent = usage ? budgetText(usage) : "";
  const chart = $("usage-chart");
  chart.replaceChildren();
  if (!usage) return;
  const buckets = 48;
  const byRole = new Map();
  for (const p of usage.chart.points) {
    if (!byRole.has(p.role)) byRole.set(p.role, new Array(buckets).fill(0));
    if (p.bucket >= 0 && p.bucket < buckets) byRole.get(p.role)[p.bucket] = p.tokens;
  }
  const top = Math.max(1, ...[...byRole.values()].flat());
  const width = 480, height = 160, pad = 20;
  chart.append(svg("text", { x: 2, y: 12 }, `${top} tokens`));
  [...byRole.entries()].forEach(([role, values], index) => {
    const colour = COLOURS[index % COLOURS.length];
    const points = values.map((v, i) =>
      `${(pad + (i * (width - pad)) / (buckets - 1)).toFixed(1)},` +
      `${(height - 4 - (v / top) * (height - pad)).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points, stroke: colour, "data-role": role }));
    chart.append(svg("text", { x: width - 90, y: 12 * (index + 1), fill: colour }, role));
  });
}

function renderRoleSelects(data) {
  const roles = data.agents.map((a) => a.role);
  for (const form of [$("send-form"), $("checkin-form")]) {
    const select = form.elements.to;
    const current = Array.from(select.options).map((o) => o.value);
    if (roles.join("\n") === current.join("\n")) continue;
    const keep = select.value;
    select.replaceChildren(...roles.map((role) => el("option", { value: role }, role)));
    if (roles.includes(keep)) select.value = keep;
    else if (ui.role && roles.includes(ui.role)) select.value = ui.role;
  }
}

function renderMessages(data) {
  const rows = data.messages.map((m) => el("tr", { "data-id": m.id, "data-marker": m.marker },
    el("td", { class: "num muted" }, m.id),
    timeCell(m.created_at),
    el("td", { class: "route" }, m.sender, el("span", { class: "arrow" }, " → "), m.recipient),
    el("td", { class: "muted" }, m.kind),
    el("td", { class: "state", title: m.last_error || (m.delivered_at ? `delivered ${stamp(m.delivered_at)}` : "") },
      badge(m.state), m.attempts > 1 ? el("span", { class: "muted small" }, ` ×${m.attempts}`) : null),
    el("td", { class: "body", title: m.preview }, el("code", { class: "marker" }, m.marker), " ", m.preview),
  ));
  fill($("messages").tBodies[0], rows);
  $("messages-empty").hidden = rows.length > 0;
}

function renderCheckins(data) {
  const rows = data.checkins.map((c) => el("tr", { "data-id": c.id },
    el("td", { class: "num muted" }, c.id),
    el("td", { class: "body", title: c.note },
      el("span", { class: "strong" }, c.recipient),
      el("span", { class: "under" }, c.note)),
    el("td", { class: "time", title: stamp(c.due_at) },
      c.state === "pending" ? relative(c.due_at) : relative(c.last_fired_at || c.due_at),
      c.every_s ? el("span", { class: "under" }, `every ${span(c.every_s)}`) : null),
    el("td", { class: "state" }, badge(c.state),
      c.fired_count ? el("span", { class: "under" }, `fired ×${c.fired_count}`) : null),
    el("td", { class: "state" }, c.message_state ? badge(c.message_state) : el("span", { class: "muted" }, "–")),
  ));
  fill($("checkins").tBodies[0], rows);
  $("checkins-empty").hidden = rows.length > 0;
}

function renderEvents(data) {
  const items = data.events.map((e) => el("li", { "data-id": e.id },
    el("time", { title: stamp(e.at) }, shortTime(e.at)),
    el("span", { class: `kind kind-${e.kind.split(".")[0]}` }, e.kind),
    e.role ? el("span", { class: "role" }, e.role) : null,
    el("span", { class: "summary", title: e.summary }, e.summary),
  ));
  $("events").replaceChildren(...items);
  if (!items.length) $("events").append(el("li", { class: "empty" }, "No events yet."));
}

// A summary row (an agent's requests past egress_events_per_minute) has no port.
function egressTarget(r) {
  return r.port == null ? `${r.method} ${r.host}` : `${r.method} ${r.host}:${r.port}`;
}

function renderEgress(data) {
  const rows = (data.egress || []).map((r) => el("tr", { "data-id": r.id },
    timeCell(r.at),
    el("td", {}, r.role || "–"),
    el("td", { class: "body", title: egressTarget(r) }, egressTarget(r)),
    el("td", { class: "state" }, r.allowed ? badge("allowed", "ok") : badge(`denied: ${r.reason}`, "failed")),
    el("td", { class: "num" }, number(r.bytes_up / 1024, " KiB", 0)),
    el("td", { class: "num" }, number(r.bytes_down / 1024, " KiB", 0)),
  ));
  fill($("egress").tBodies[0], rows);
  $("egress-empty").hidden = rows.length > 0;
}

function renderQueue(data) {
  $("queue-card").hidden = data.queue.length === 0;
  const rows = data.queue.map((q) => el("tr", { "data-id": q.id },
    el("td", { class: "num muted" }, q.id),
    el("td", { class: "body", title: q.spec_path || "" }, q.spec_path || "–"),
    el("td", {}, q.project || "–"),
    el("td", { class: "state" }, badge(q.state)),
    el("td", { class: "num" }, `${q.attempts || 0}${q.max_attempts ? ` / ${q.max_attempts}` : ""}`),
    timeCell(q.created_at),
    el("td", { class: "body bad", title: q.last_error || "" }, q.last_error || ""),
  ));
  fill($("queue").tBodies[0], rows);
}

function render(data) {
  ui.now = data.now;
  $("version").textContent = data.version;
  const before = ui.project;
  ui.project = data.project ? data.project.name : null;
  if (before !== ui.project) {
    stopWatching();
    ui.role = null;
  }
  renderProjects(data);
  if (!ui.role && data.agents.length) {
    // Start on the first agent that is not the orchestrator: usually the one doing the work.
    const first = data.agents.find((a) => a.role !== "orchestrator") || data.agents[0];
    watch(first.role);
  }
  renderAgents(data);
  renderUsage(data);
  renderRoleSelects(data);
  renderMessages(data);
  renderCheckins(data);
  renderEvents(data);
  renderEgress(data);
  renderQueue(data);
}

// --- the pane -----------------------------------------------------------------------------------

function paneStatus(text, kind) {
  const status = $("pane-status");
  status.textContent = text;
  status.className = `sub ${kind || ""}`;
}

function setPane(text) {
  const pane = $("pane");
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
  pane.textContent = text;
  if (atBottom) pane.scrollTop = pane.scrollHeight;
}

function stopWatching() {
  if (ui.stream) ui.stream.close();
  ui.stream = null;
}

function watch(role) {
  if (!ui.project) return;
  stopWatching();
  ui.role = role;
  for (const row of $("agents").tBodies[0].rows) {
    row.classList.toggle("selected", row.dataset.role === role);
  }
  $("pane-role").textContent = role;
  setPane("");
  paneStatus("connecting…");
  const url = `/v1/dashboard/pane/${encodeURIComponent(ui.project)}/${encodeURIComponent(role)}/stream`;
  const stream = new EventSource(url);
  stream.addEventListener("pane", (event) => {
    const pane = JSON.parse(event.data);
    if (pane.error) {
      paneStatus(pane.error, "bad");
      if (pane.text === null && !$("pane").textContent) setPane("(no pane to show)");
      return;
    }
    setPane(pane.text);
    paneStatus(`live · changed ${shortTime(pane.at)}`, "ok");
  });
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED) paneStatus("stream closed: reload the page", "bad");
    else paneStatus("reconnecting…", "warn");
  });
  ui.stream = stream;
}

// --- operator access and the forms --------------------------------------------------------------

function setAccess() {
  const operator = Boolean(ui.token);
  $("token-form").hidden = operator;
  $("operator").hidden = !operator;
  $("actions-hint").hidden = operator;
  for (const form of [$("send-form"), $("checkin-form")]) {
    form.querySelector("fieldset").disabled = !operator;
  }
}

function lock() {
  sessionStorage.removeItem(TOKEN_KEY);
  ui.token = "";
  setAccess();
}

async function unlock(event) {
  event.preventDefault();
  const input = $("token");
  const token = input.value.trim();
  if (!token) return;
  try {
    const who = await api("/v1/whoami", { token });
    if (who.kind !== "operator") {
      notice("That is an agent's token: the forms need the operator token.", "error");
      return;
    }
  } catch (error) {
    notice(`Token refused: ${error.message}`, "error");
    return;
  }
  input.value = "";
  ui.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  notice("");
  setAccess();
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return `dashboard-${crypto.randomUUID()}`;
  return `dashboard-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

function result(form, text, kind) {
  const box = form.querySelector(".result");
  box.textContent = text;
  box.className = `result ${kind}`;
}

// The idempotency key lives as long as the form's content: a retried submit is sent once.
async function submit(form, path, body, done) {
  if (!form.dataset.key) form.dataset.key = newKey();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const row = await api(path, {
      method: "POST",
      body: JSON.stringify(Object.assign({ project: ui.project, idempotency_key: form.dataset.key }, body)),
    });
    delete form.dataset.key;
    result(form, done(row), "ok");
    refresh();
    return row;
  } catch (error) {
    if (error.status === 401) lock();
    result(form, error.message, "bad");
    return null;
  } finally {
    button.disabled = false;
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const form = event.target;
  const row = await submit(form, "/v1/messages",
    { to: form.elements.to.value, body: form.elements.body.value },
    (m) => `Queued #${m.id} (${m.marker}) for ${form.elements.to.value}.`);
  if (row) form.elements.body.value = "";
}

async function scheduleCheckin(event) {
  event.preventDefault();
  const form = event.target;
  const body = {
    to: form.elements.to.value,
    minutes: Number(form.elements.minutes.value),
    note: form.elements.note.value,
  };
  if (form.elements.every.value) body.every_minutes = Number(form.elements.every.value);
  const row = await submit(form, "/v1/checkins", body,
    (c) => `Check-in #${c.id} for ${c.recipient || body.to}, due ${stamp(c.due_at)}.`);
  if (row) form.elements.note.value = "";
}

function start() {
  $("project").addEventListener("change", (event) => {
    stopWatching();
    ui.project = event.target.value;
    ui.role = null;
    $("pane-role").textContent = "";
    paneStatus("");
    setPane("");
    refresh();
  });
  $("token-form").addEventListener("submit", unlock);
  $("lock").addEventListener("click", lock);
  $("send-form").addEventListener("submit", sendMessage);
  $("checkin-form").addEventListener("submit", scheduleCheckin);
  for (const form of [$("send-form"), $("checkin-form")]) {
    form.addEventListener("input", () => delete form.dataset.key);
  }
  setAccess();
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
