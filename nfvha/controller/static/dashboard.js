// nfvha controller dashboard: polls the REST API and redraws four tables.
// Everything shown comes through textContent: instance names, details and
// errors are guest- or sink-supplied text, never markup.
"use strict";

const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(250, Number(params.get("poll_ms")) || 2000);
const EVENTS = Math.min(1000, Math.max(1, Number(params.get("events")) || 50));

// With [api] protect_reads the reads need a Keystone token. It is kept in
// this tab's sessionStorage (gone when the tab closes) and sent as
// X-Auth-Token. A link may hand one over as #token=... : the fragment never
// reaches a server, and it is taken out of the address bar at once.
const TOKEN_KEY = "nfvha.token";
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
}

class HttpError extends Error {
  constructor(path, status, detail) {
    super(path + ": HTTP " + status + (detail ? " (" + detail + ")" : ""));
    this.status = status;
  }
}

function el(tag, opts, ...children) {
  const node = document.createElement(tag);
  if (opts && opts.cls) node.className = opts.cls;
  if (opts && opts.data) for (const [k, v] of Object.entries(opts.data)) node.dataset[k] = v;
  if (opts && opts.title) node.title = opts.title;
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function badge(value) {
  const v = value === null || value === undefined ? "—" : String(value);
  // a class only for the states we know; anything else is plain text
  const known = /^[a-z_]{1,20}$/.test(v) ? " state-" + v : "";
  return el("span", {cls: "badge" + known}, v);
}

function ago(iso) {
  if (!iso) return "—";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (!isFinite(s)) return iso;
  if (s < 1) return "just now";
  if (s < 120) return s.toFixed(1) + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function when(iso) { return el("span", {title: iso || ""}, ago(iso)); }

function fill(tableId, rows, columns, emptyText) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    body.append(el("tr", null, el("td", {cls: "empty"}, emptyText)));
    body.firstChild.firstChild.colSpan = columns;
    return;
  }
  for (const r of rows) body.append(r);
}

const PROBLEM = (i) => i.heartbeat.state === "failed" || i.heartbeat.health === "unhealthy"
  || i.host_state === "silent";

function instanceRow(i) {
  return el("tr", {cls: PROBLEM(i) ? "problem" : "", data: {uuid: i.uuid}},
    el("td", {cls: "mono"}, i.uuid), el("td", null, i.name || "—"), el("td", null, i.host),
    el("td", null, badge(i.heartbeat.state)), el("td", null, badge(i.heartbeat.health)),
    el("td", null, i.heartbeat.interval_ms ? i.heartbeat.interval_ms + " ms" : "—"),
    el("td", null, i.corrective_action || "—"), el("td", null, badge(i.host_state)),
    el("td", null, when(i.state_at)));
}

function hostRow(h) {
  return el("tr", {cls: h.state === "silent" ? "problem" : "", data: {host: h.host}},
    el("td", null, h.host), el("td", null, badge(h.state)), el("td", null, when(h.since)),
    el("td", null, when(h.last_seen_at)),
    el("td", null, (h.instances === null ? "—" : h.instances) + " / " + h.instances_on_record),
    el("td", null, h.restarts), el("td", null, h.silences));
}

function deliveries(ds) {
  const cell = el("td");
  for (const d of ds) {
    const tip = [d.last_error, d.note].filter(Boolean).join(" · ");
    cell.append(el("div", {title: tip, data: {sink: d.sink}},
      d.sink + " ", badge(d.status), " ×" + d.attempts));
  }
  return cell;
}

// What the recovery sink did: status, action, time until the heartbeat was
// back; the reason (partly guest or Nova text) only as a tooltip
function recovery(a) {
  if (!a) return el("td", null, "—");
  return el("td", {title: a.reason || "", data: {action: a.status}}, badge(a.status),
    a.action ? " " + a.action : "",
    a.recovery_ms === null || a.recovery_ms === undefined ? "" :
      " " + (a.recovery_ms / 1000).toFixed(1) + " s");
}

function eventRow(e) {
  return el("tr", {data: {event: e.id}},
    el("td", null, when(e.detected_at)), el("td", null, badge(e.kind)),
    el("td", {cls: "mono"}, e.instance_uuid), el("td", null, e.host),
    el("td", null, e.corrective_action), recovery(e.action), el("td", null, e.detail),
    deliveries(e.deliveries));
}

function groupRow(g) {
  const members = el("td");
  for (const m of g.members) {
    members.append(el("div", null, (m.instance_name || m.member) + " @ " + (m.host || "—") + " ",
      badge(m.heartbeat || m.state)));
  }
  return el("tr", {data: {group: g.id}}, el("td", null, g.name || g.id, el("br"),
    el("small", {cls: "mono"}, g.id)), el("td", null, g.origin || "—"), members);
}

function card(label, value, bad, title) {
  return el("div", {cls: "card" + (bad ? " bad" : ""), data: {card: label}, title: title},
    el("b", null, value), label);
}

async function getJSON(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const r = await fetch(path, {cache: "no-store", headers: token ? {"X-Auth-Token": token} : {}});
  if (!r.ok) {
    let detail = "";
    try { detail = String((await r.json()).detail || ""); } catch (e) { /* not JSON */ }
    throw new HttpError(path, r.status, detail.slice(0, 200));
  }
  return r.json();
}

function showLogin(needed) {
  document.getElementById("login").hidden = !needed;
  document.getElementById("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

document.getElementById("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  refresh();
});

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  refresh();
});

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [hosts, instances, events, groups] = await Promise.all([
      getJSON("/v1/hosts"), getJSON("/v1/instances"), getJSON("/v1/events?limit=" + EVENTS),
      getJSON("/v1/server-groups").catch(() => [])]);
    instances.sort((a, b) => (PROBLEM(b) - PROBLEM(a)) || a.host.localeCompare(b.host)
      || a.uuid.localeCompare(b.uuid));
    events.reverse();
    const count = (pred) => instances.filter(pred).length;
    const failed = count((i) => i.heartbeat.state === "failed");
    const unhealthy = count((i) => i.heartbeat.health === "unhealthy");
    const silent = hosts.filter((h) => h.state === "silent").length;
    const pending = events.reduce((n, e) =>
      n + e.deliveries.filter((d) => d.status === "pending").length, 0);
    document.getElementById("summary").replaceChildren(
      card("instances", instances.length),
      card("heartbeating", count((i) => i.heartbeat.state === "enabled")),
      card("failed", failed, failed > 0), card("unhealthy", unhealthy, unhealthy > 0),
      card("hosts", hosts.length), card("silent hosts", silent, silent > 0),
      card("deliveries pending", pending, pending > 0,
        "among the " + events.length + " latest fault events"));
    fill("hosts", hosts.map(hostRow), 7, "no compute agent heard yet");
    fill("instances", instances.map(instanceRow), 9, "no instances");
    fill("events", events.map(eventRow), 8, "no fault events");
    fill("groups", groups.map(groupRow), 3, "no server groups");
    showLogin(false);
    status.className = "status";
    status.textContent = "updated " + new Date().toLocaleTimeString() + " · every "
      + POLL_MS / 1000 + " s";
  } catch (err) {
    status.className = "status error";
    if (err.status === 401 || err.status === 403) {
      showLogin(true);
      status.textContent = (err.status === 401 ? "a Keystone token is needed: "
        : "this token may not read: ") + err.message;
    } else {
      showLogin(false);
      status.textContent = "controller unreachable: " + err.message + " (retrying)";
    }
  }
}

refresh();
setInterval(refresh, POLL_MS);
