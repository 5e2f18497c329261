// bastion admin dashboard: reads /api/status, /api/upstreams and /api/sites every 2 s and
// drains or enables servers. No external assets; the token (when admin.token is set) is
// kept in sessionStorage and sent as "Authorization: Bearer ...".
"use strict";

const TOKEN_KEY = "bastion-admin-token";
const REFRESH_MS = 2000;

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function call(method, path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, { method, headers, cache: "no-store" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok && !(path === "/api/reload" && response.status === 422)) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function showMessage(text, ok) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = ok ? "message ok" : "message";
  box.hidden = !text;
}

function renderStatus(status) {
  const reload = status.last_reload;
  const parts = [
    "version " + status.version,
    "up " + Math.round(status.uptime_s) + " s",
    "generation " + status.generation,
    status.workers.length + " worker(s)",
    "config " + (status.config_hash ? status.config_hash.slice(0, 12) : "(no file)"),
  ];
  if (reload) parts.push("last reload " + (reload.ok ? "ok" : "FAILED"));
  document.getElementById("status").textContent = parts.join(" · ");
}

function serverRow(upstream, server) {
  const action = server.drained ? "enable" : "drain";
  const button = el("button", { type: "button", class: action }, action);
  button.addEventListener("click", () => act(upstream, server.index, action));
  const health = server.health + (server.health_detail ? " (" + server.health_detail + ")" : "");
  const row = el(
    "tr",
    { "data-upstream": upstream, "data-index": String(server.index), class: "server" },
    el("td", {}, server.index),
    el("td", { class: "label" }, server.label, server.backup ? " (backup)" : ""),
    el("td", {}, el("span", { class: "state state-" + server.state }, server.state)),
    el("td", { class: "muted" }, health),
    el("td", { class: "in-flight" }, server.in_flight),
    el("td", {}, server.latency_ms.toFixed(1) + " ms"),
    el("td", {}, server.weight),
    el("td", {}, button),
  );
  return row;
}

function renderUpstreams(data) {
  const cards = data.upstreams.map((upstream) => {
    const head = el("tr", {}, ...["#", "server", "state", "health", "in flight", "latency",
      "weight", ""].map((name) => el("th", {}, name)));
    const rows = upstream.servers.map((server) => serverRow(upstream.name, server));
    return el(
      "div",
      { class: "card upstream", "data-name": upstream.name },
      el("h3", {}, upstream.name, el("span", { class: "muted" }, " · " + upstream.balance)),
      el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)),
    );
  });
  document.getElementById("upstreams").replaceChildren(...cards);
}

function routeTarget(route) {
  if (route.upstream) return "→ " + route.upstream;
  if (route.redirect) return "redirect " + route.redirect;
  return "";
}

function renderSites(data) {
  const cards = data.sites.map((site) => {
    const rows = site.routes.map((route) => el(
      "tr",
      {},
      el("td", {}, route.regex ? "~ " + route.path : route.path),
      el("td", { class: "muted" }, route.methods ? route.methods.join(" ") : "any method"),
      el("td", {}, routeTarget(route)),
    ));
    return el(
      "div",
      { class: "card site" },
      el("h3", {}, site.hosts.join(", "), site.tls ? " · TLS" : ""),
      el("table", {}, el("tbody", {}, ...rows)),
    );
  });
  document.getElementById("sites").replaceChildren(...cards);
}

async function refresh() {
  try {
    const [status, upstreams] = await Promise.all([
      call("GET", "/api/status"),
      call("GET", "/api/upstreams"),
    ]);
    renderStatus(status);
    renderUpstreams(upstreams);
    if (!document.querySelector("#sites .site")) renderSites(await call("GET", "/api/sites"));
    if (document.getElementById("message").dataset.sticky !== "1") showMessage("", true);
  } catch (error) {
    const hint = error.status === 401 ? " — enter the admin token above" : "";
    showMessage("Cannot read the admin API: " + error.message + hint, false);
  }
}

async function act(upstream, index, action) {
  try {
    const path = "/api/upstreams/" + encodeURIComponent(upstream) + "/servers/" + index +
      "/" + action;
    await call("POST", path);
  } catch (error) {
    showMessage(action + " failed: " + error.message, false);
  }
  await refresh();
}

async function reload() {
  const box = document.getElementById("message");
  try {
    const result = await call("POST", "/api/reload");
    box.dataset.sticky = "1";
    showMessage(result.ok ? "Configuration reloaded." : "Reload failed:\n" + result.error,
      result.ok);
    renderSites(await call("GET", "/api/sites"));
  } catch (error) {
    showMessage("Reload failed: " + error.message, false);
  }
  setTimeout(() => { box.dataset.sticky = ""; }, 10000);
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    else sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("sites").replaceChildren();
    refresh();
  });
  document.getElementById("reload").addEventListener("click", reload);
  refresh();
  setInterval(refresh, REFRESH_MS);
});
