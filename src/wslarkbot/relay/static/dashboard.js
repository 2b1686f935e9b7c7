// The wslarkbot relay dashboard: polls dashboard/api every second and redraws the tables.
// Only textContent is used to put data on the page (never innerHTML): peer addresses and channel names
// come from the network.
"use strict";

// Built from location.origin, which never holds credentials: a page opened as http://user:pw@host/dashboard
// has them in its own URL, and fetch() refuses a URL with credentials (a relative one would inherit them).
const API = new URL("/dashboard/api", location.origin).href;
const INTERVAL_MS = 1000;
const seenRequests = new Set();

function $(id) { return document.getElementById(id); }

function fmtTime(ts) {
  if (ts === null || ts === undefined) return "–";
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

function fmtAgo(ts, now) {
  if (ts === null || ts === undefined) return "–";
  const s = Math.max(0, Math.round(now - ts));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h ago";
}

function fmtDuration(s) {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return "up " + (h ? h + " h " : "") + (h || m ? m + " min " : "") + (s % 60) + " s";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

function statusCell(status) {
  return cell(status, status >= 200 && status < 300 ? "status-ok" : "status-bad");
}

function fill(tbodyId, emptyId, items, makeRow) {
  const tbody = $(tbodyId);
  const rows = items.map(makeRow);
  tbody.replaceChildren(...rows);
  $(emptyId).hidden = items.length > 0;
}

function render(data) {
  const g = data.gauges;
  $("g-subscribers").textContent = g.subscribers;
  $("g-channels").textContent = g.channels;
  $("g-pending").textContent = g.pending_replies;
  $("g-buffered").textContent = g.buffered_bytes;
  $("r-received").textContent = data.rates.received.toFixed(1);
  $("r-failed").textContent = data.rates.failed.toFixed(1);
  const t = data.totals;
  $("totals").textContent = [t.received, t.delivered, t.acked, t.failed].join(" · ");
  $("uptime").textContent = fmtDuration(data.uptime);

  fill("subscribers", "subscribers-empty", data.subscribers, (s) => {
    const tr = document.createElement("tr");
    tr.dataset.subId = String(s.id);
    tr.append(
      cell(s.id), cell(s.peer, "mono"), cell(s.channels.join(", "), "mono"), cell(s.protocol),
      cell(fmtTime(s.connected_since)), cell(fmtAgo(s.last_ack, data.now)), cell(s.answers),
      cell(s.buffered_bytes),
    );
    return tr;
  });

  fill("channels", "channels-empty", data.channels, (c) => {
    const tr = document.createElement("tr");
    tr.dataset.channel = c.name;
    tr.append(
      cell(c.name, "mono"), cell(c.kind), cell(c.subscribers), cell(c.received), cell(c.failed),
      cell(fmtAgo(c.last_event, data.now)),
      c.last_status === null ? cell(null) : statusCell(c.last_status),
    );
    return tr;
  });

  fill("recent", "recent-empty", data.recent, (d) => {
    const tr = document.createElement("tr");
    tr.dataset.requestId = d.request_id;
    if (!seenRequests.has(d.request_id)) {
      seenRequests.add(d.request_id);
      tr.className = "fresh";
    }
    tr.append(
      cell(fmtTime(d.time)), cell(d.channel, "mono"), cell(d.request_id, "mono"), cell(d.kind),
      statusCell(d.status), cell(d.outcome), cell(d.latency_ms.toFixed(1) + " ms"), cell(d.delivered),
    );
    return tr;
  });
  if (seenRequests.size > 1000) seenRequests.clear();

  const redis = data.hub && data.hub.redis;
  $("redis").hidden = !redis;
  if (redis) {
    $("redis").dataset.state = redis.connected ? "live" : "error";
    $("redis").textContent = "redis " + (redis.connected ? "connected" : "down") + " · node " + redis.node;
  }

  const gw = data.gateway;
  $("gateway-section").hidden = !gw;
  if (gw) {
    const apps = Object.keys(gw).sort();
    $("gateway").replaceChildren(...apps.map((app) => {
      const tr = document.createElement("tr");
      tr.append(cell(app, "mono"), cell(gw[app]));
      return tr;
    }));
  }
}

function setLive(state, text) {
  const badge = $("live");
  badge.dataset.state = state;
  badge.textContent = text;
}

async function poll() {
  try {
    const resp = await fetch(API, { cache: "no-store", credentials: "same-origin" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    setLive("live", "live");
  } catch (err) {
    setLive("error", "disconnected (" + err.message + ")");
  } finally {
    setTimeout(poll, INTERVAL_MS);
  }
}

document.addEventListener("DOMContentLoaded", poll);
