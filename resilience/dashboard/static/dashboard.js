// The resilience dashboard: one EventSource, one render per frame, text nodes only.
"use strict";

const HISTORY = 60;
const history = new Map();

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  if (value < 0.001) return (value * 1e6).toFixed(0) + " \u00b5s";
  if (value < 1) return (value * 1000).toFixed(value < 0.01 ? 2 : 1) + " ms";
  if (value < 120) return value.toFixed(1) + " s";
  if (value < 7200) return (value / 60).toFixed(1) + " min";
  return (value / 3600).toFixed(1) + " h";
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString();
}

function track(id, value) {
  let points = history.get(id);
  if (!points) history.set(id, (points = []));
  points.push(Number(value) || 0);
  if (points.length > HISTORY) points.shift();
  return points;
}

function spark(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${HISTORY - 1} 28`);
  svg.setAttribute("preserveAspectRatio", "none");
  const top = Math.max(1, ...points);
  const drawn = points.length > 1 ? points : [points[0], points[0]];
  const step = (HISTORY - 1) / (drawn.length - 1);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute(
    "points",
    drawn.map((v, i) => `${(i * step).toFixed(2)},${(27 - (v / top) * 25).toFixed(2)}`).join(" ")
  );
  svg.append(line);
  return svg;
}

function tile(kind, name, cls, badge, lines, points) {
  const node = el("div", { class: `tile ${cls}`, "data-kind": kind, "data-name": name },
    el("div", { class: "top" },
      el("span", { class: "name", title: name }, name),
      el("span", { class: "state" }, badge)));
  for (const line of lines) node.append(line);
  node.append(spark(points));
  return node;
}

function line(...parts) {
  return el("div", { class: "line" }, ...parts);
}

function fill(id, nodes, empty) {
  const box = document.getElementById(id);
  box.replaceChildren(...(nodes.length ? nodes : [el("div", { class: "empty" }, empty)]));
}

function breakerTile(b, now, byName) {
  const lines = [];
  if (b.state === "open") {
    lines.push(line("open for ", el("b", {}, seconds(now - b.since)),
      ", next probe in ", el("b", {}, seconds(b.next_probe_in))));
  } else if (b.state === "half_open") {
    lines.push(line("probing since ", el("b", {}, clock(b.since)), `, ${b.probes} probe(s) running`));
  }
  if (b.failure_rate_threshold !== null) {
    const rate = b.failure_rate === null ? "-" : (b.failure_rate * 100).toFixed(0) + "%";
    lines.push(line("failure rate ", el("b", {}, rate), ` of ${b.window_calls} call(s), opens at `,
      (b.failure_rate_threshold * 100).toFixed(0) + "%"));
  } else {
    lines.push(line("failures in a row ", el("b", {}, `${b.consecutive_failures}/${b.failure_threshold}`)));
  }
  lines.push(line(`opened ${b.times_opened}\u00d7, ${b.rejected} rejected, ${b.failures} failures`));
  if (b.reason) lines.push(el("div", { class: "reason" }, b.reason));
  const metrics = byName.get(b.name);
  const value = metrics ? metrics.failures : b.consecutive_failures;
  const badge = b.state === "half_open" ? "HALF-OPEN" : b.state.toUpperCase();
  return tile("breaker", b.name, b.state, badge, lines, track("b:" + b.name, value));
}

function limiterTile(r) {
  const lines = [];
  if (r.rate !== null) {
    lines.push(line("starts ", el("b", {}, `${r.starts}/${r.rate}`), ` per ${seconds(r.per)}`,
      r.burst !== r.rate ? `, burst ${r.burst}` : ""));
  }
  lines.push(line("waiting ", el("b", {}, r.waiting)));
  if (r.window_remaining > 0) {
    lines.push(line("backoff window ", el("b", {}, seconds(r.window_remaining)),
      r.window_ends_at ? ` left, until ${clock(r.window_ends_at)}` : " left"));
  }
  const badge = r.window_remaining > 0 ? "WINDOW" : r.saturated ? "SATURATED" : "OK";
  return tile("limiter", r.key, r.saturated ? "busy" : "", badge, lines, track("r:" + r.key, r.starts));
}

function poolTile(p) {
  const limit = p.live_limit !== null ? p.live_limit : p.limit;
  const lines = [line("in use ", el("b", {}, `${p.in_use}/${limit === null ? "?" : limit}`),
    p.live_limit !== null ? ` (adaptive; declared ${p.limit})` : "")];
  lines.push(line("waiting ", el("b", {}, p.waiting === null ? "n/a" : p.waiting)));
  if (p.oldest_lease !== null) {
    // at least: a unit leased before the pool was first watched has no start
    lines.push(line("oldest lease ", el("b", {}, (p.oldest_lease_at_least ? "\u2265 " : "") + seconds(p.oldest_lease))));
  }
  if (p.holders) {
    const holders = Object.entries(p.holders).map(([who, units]) => `${who} (${units})`).join(", ");
    if (holders) lines.push(line("held by ", holders));
  }
  const full = limit !== null && p.in_use >= limit;
  return tile("pool", p.key, full || p.waiting ? "busy" : "", full ? "FULL" : "OK", lines,
    track("p:" + p.key, p.in_use));
}

function budgetTile(b) {
  const quota = b.ratio === null && b.window === null && b.balance !== null;
  const left = b.balance === null ? "?" : b.balance.toFixed(1);
  const lines = quota ? [line("tokens left ", el("b", {}, left))]
    : [line("retries left ", el("b", {}, left)),
      line(`${b.calls} call(s), ${b.retries} retries in the window`)];
  if (b.ratio !== null) lines.push(line(`ratio ${b.ratio} over ${seconds(b.window)}`));
  const spent = b.balance !== null && b.balance < 1;
  return tile("budget", b.key, spent ? "open" : "", spent ? "SPENT" : "OK", lines,
    track("u:" + b.key, b.balance || 0));
}

function throttleTile(t) {
  const refusing = t.probability > 0;
  const lines = [line("refused now ", el("b", {}, `${(t.probability * 100).toFixed(0)}%`)),
    line(`${t.accepts} of ${t.requests} request(s) accepted`)];
  if (t.k !== null) lines.push(line(`k ${t.k} over ${seconds(t.window)}`));
  return tile("throttle", t.key, refusing ? "open" : "", refusing ? "REFUSING" : "OK", lines,
    track("t:" + t.key, t.probability));
}

function metricsTable(metrics) {
  if (!metrics || !metrics.length) {
    return el("div", { class: "empty" }, metrics ? "no calls yet" : "not collected by this server");
  }
  const head = ["name", "calls", "failures", "error %", "retries", "give-ups", "rejected",
    "p50", "p90", "p99"];
  const rows = metrics.map((m) => el("tr", { "data-name": m.name },
    el("td", {}, m.name), el("td", {}, m.calls), el("td", {}, m.failures),
    el("td", {}, m.error_rate === null ? "-" : (m.error_rate * 100).toFixed(1)),
    el("td", {}, m.retries), el("td", {}, m.give_ups), el("td", {}, m.rejections),
    el("td", {}, seconds(m.p50)), el("td", {}, seconds(m.p90)), el("td", {}, seconds(m.p99))));
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
}

function render(data) {
  document.getElementById("title").textContent = data.title || "resilience";
  document.title = data.title || "resilience";
  const error = document.getElementById("error");
  if (data.error) {
    error.textContent = data.error;
    error.style.display = "block";
    return;
  }
  error.style.display = "none";
  document.getElementById("store").textContent = data.store;
  document.getElementById("updated").textContent = "updated " + clock(data.taken_at);
  const byName = new Map((data.metrics || []).map((m) => [m.name, m]));
  fill("breakers", data.breakers.map((b) => breakerTile(b, data.taken_at, byName)), "no breakers");
  fill("limiters", data.limiters.map(limiterTile), "no rate limiters");
  fill("pools", data.pools.map(poolTile), "no pools");
  fill("budgets", data.budgets.map(budgetTile), "no keyed retry budgets or quotas");
  fill("throttles", (data.throttles || []).map(throttleTile), "no throttles");
  document.getElementById("metrics").replaceChildren(metricsTable(data.metrics));
  document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
}

function connect() {
  const status = document.getElementById("status");
  const source = new EventSource("events");
  source.onopen = () => {
    status.textContent = "live";
    status.className = "live";
  };
  source.onmessage = (event) => render(JSON.parse(event.data));
  source.onerror = () => {
    status.textContent = "reconnecting";
    status.className = "down";
  };
}

connect();
