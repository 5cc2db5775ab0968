// Junction dashboard: a client of the admin API. Data only ever goes into the page through
// textContent (never as HTML); the token stays in this tab (sessionStorage).
"use strict";

const REFRESH_MS = 2000;
const STORE_KEY = "junction-token";
let token = null;
let timer = null;
let shown = null; // the message id whose detail is open
let knownChannels = null; // the channel names the filter lists

function $(id) { return document.getElementById(id); }

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "-";
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (response.status === 401) {
    signOut("The engine refused the token.");
    throw new Error("unauthorized");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error((data && (data.detail || data.title)) || response.statusText);
  return data;
}

function showProblem(text) {
  const p = $("problem");
  p.textContent = text || "";
  p.hidden = !text;
}

// -- channels ---------------------------------------------------------------------------------

function destinationsCell(channel) {
  const td = el("td");
  const counters = channel.counters || {};
  for (const dest of channel.destinations || []) {
    const parts = ["QUEUED", "SENT", "ERROR"]
      .map((status) => [status, counters["dest:" + dest.name + ":" + status] || 0])
      .filter(([, n]) => n > 0)
      .map(([status, n]) => status.toLowerCase() + " " + n);
    const line = el("div", dest.name + ": " + (parts.join(", ") || "nothing yet"));
    line.dataset.destination = dest.name;
    td.append(line);
  }
  return td;
}

function problemsCell(channel) {
  const td = el("td", null, { class: "error" });
  const problems = [];
  if (channel.source && channel.source.problem) problems.push("source: " + channel.source.problem);
  if (channel.processing && channel.processing.problem) problems.push("processing: " + channel.processing.problem);
  for (const dest of channel.destinations || []) {
    if (dest.problem) problems.push(dest.name + ": " + dest.problem);
  }
  for (const alert of channel.alerts || []) {
    problems.push("alert: " + alert.event + (alert.destination ? " " + alert.destination : ""));
  }
  for (const text of problems) td.append(el("div", text));
  return td;
}

function actionsCell(channel) {
  const td = el("td");
  const actions = {
    started: ["pause", "stop", "redeploy"],
    paused: ["resume", "stop", "redeploy"],
    stopped: ["start", "redeploy"],
    undeployed: ["deploy"],
  }[channel.state] || [];
  for (const action of actions) {
    const button = el("button", action, { type: "button" });
    button.dataset.channel = channel.name;
    button.dataset.action = action;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("POST", "/api/channels/" + encodeURIComponent(channel.name) + "/" + action);
        showProblem("");
      } catch (err) {
        showProblem(channel.name + " " + action + ": " + err.message);
      }
      await refresh();
    });
    td.append(button);
  }
  return td;
}

function renderChannels(channels) {
  const body = $("channels").tBodies[0];
  body.replaceChildren();
  const select = $("filter-channel");
  const names = channels.map((channel) => channel.name);
  const rebuild = names.join("\n") !== knownChannels; // an open list is left alone otherwise
  const chosen = select.value;
  if (rebuild) {
    knownChannels = names.join("\n");
    select.replaceChildren(el("option", "all", { value: "" }));
  }
  for (const channel of channels) {
    const counters = channel.counters || {};
    const received = Object.entries(counters)
      .filter(([key]) => !key.startsWith("dest:"))
      .reduce((sum, [, n]) => sum + n, 0);
    const errors = (counters.ERROR || 0) + (counters.EXCEPTION || 0);
    const source = channel.source ? [channel.source.type, channel.source.address].filter(Boolean).join(" ") : "-";
    const state = el("td");
    state.append(el("span", channel.state, { class: "state state-" + channel.state }));
    const tr = row(
      [
        el("td", channel.name),
        state,
        el("td", source),
        el("td", received, { class: "num" }),
        el("td", errors, { class: "num" + (errors ? " error" : "") }),
        destinationsCell(channel),
        problemsCell(channel),
        actionsCell(channel),
      ],
      { "data-channel": channel.name },
    );
    body.append(tr);
    if (rebuild) select.append(el("option", channel.name, { value: channel.name }));
  }
  if (rebuild) select.value = chosen;
}

// -- messages ---------------------------------------------------------------------------------

function renderMessages(messages) {
  const body = $("messages").tBodies[0];
  body.replaceChildren();
  for (const m of messages) {
    const dests = Object.entries(m.destinations || {}).map(([name, status]) => name + " " + status).join(", ");
    const tr = row(
      [
        el("td", when(m.received_at)),
        el("td", m.channel),
        el("td", m.control_id || "-"),
        el("td", m.status, { class: "status-" + m.status }),
        el("td", m.run, { class: "num" }),
        el("td", dests || "-"),
        el("td", m.error || ""),
      ],
      { class: "clickable", "data-id": m.id },
    );
    tr.addEventListener("click", () => openDetail(m.id));
    body.append(tr);
  }
}

async function openDetail(id) {
  shown = id;
  const detail = await api("GET", "/api/messages/" + encodeURIComponent(id));
  const m = detail.message;
  $("detail-id").textContent = m.id;
  $("detail-summary").textContent =
    m.channel + ", " + m.status + ", run " + m.run + ", received " + when(m.received_at) +
    ", control id " + (m.control_id || "-") + (m.error ? ", error: " + m.error : "");
  const dests = $("detail-destinations").tBodies[0];
  dests.replaceChildren();
  for (const d of detail.destinations) {
    dests.append(row([d.run, d.destination, el("td", d.status, { class: "status-" + d.status }),
      el("td", d.attempts, { class: "num" }), d.last_error || ""]));
  }
  const attempts = $("detail-attempts").tBodies[0];
  attempts.replaceChildren();
  for (const a of detail.attempts) {
    attempts.append(row([a.attempt, a.run, a.destination, when(a.started_at),
      el("td", a.status, { class: "status-" + a.status }), a.error || ""]));
  }
  $("detail").hidden = false;
}

// -- refresh and sign-in ----------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  try {
    const params = new URLSearchParams({ limit: "50" });
    if ($("filter-channel").value) params.set("channel", $("filter-channel").value);
    if ($("filter-status").value) params.set("status", $("filter-status").value);
    if ($("filter-control").value.trim()) params.set("control_id", $("filter-control").value.trim());
    const [health, channels, messages] = await Promise.all([
      api("GET", "/api/health"),
      api("GET", "/api/channels"),
      api("GET", "/api/messages?" + params.toString()),
    ]);
    $("engine").textContent = "version " + health.version + " on " + health.node;
    renderChannels(channels);
    renderMessages(messages);
    if (health.invalid_channel_files && health.invalid_channel_files.length) {
      showProblem("Invalid channel files: " + health.invalid_channel_files.join("; "));
    }
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (token) showProblem("Cannot reach the engine: " + err.message);
  }
  if (token && !document.hidden) timer = setTimeout(refresh, REFRESH_MS);
}

function signIn(value) {
  token = value;
  sessionStorage.setItem(STORE_KEY, value);
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  refresh();
}

function signOut(reason) {
  token = null;
  sessionStorage.removeItem(STORE_KEY);
  clearTimeout(timer);
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim());
  });
  $("logout").addEventListener("click", () => signOut(""));
  for (const id of ["filter-channel", "filter-status", "filter-control"]) {
    $(id).addEventListener("change", refresh);
  }
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  $("close-detail").addEventListener("click", () => { $("detail").hidden = true; shown = null; });
  $("reprocess").addEventListener("click", async () => {
    if (!shown) return;
    try {
      await api("POST", "/api/messages/" + encodeURIComponent(shown) + "/reprocess");
      await openDetail(shown);
      showProblem("");
    } catch (err) {
      showProblem("reprocess: " + err.message);
    }
    refresh();
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden && token) refresh(); });
  // A link from `junction dashboard` carries the token in the fragment, which browsers never
  // send to a server; it is moved to this tab's storage and taken off the address bar.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const linked = fragment.get("token");
  if (linked) history.replaceState(null, "", location.pathname);
  const saved = linked || sessionStorage.getItem(STORE_KEY);
  if (saved) signIn(saved); else signOut("");
});
