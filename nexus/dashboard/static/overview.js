// Overview: live figures from the /admin namespace's `stats` events (socket.io-client), and a chart.
"use strict";

(() => {
  const WINDOW_MS = 5 * 60 * 1000;
  const STORAGE_KEY = "nexus.dashboard.rates";
  const SVG = "http://www.w3.org/2000/svg";
  const points = []; // {at, mps, eps}

  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (Math.round((Number(n) || 0) * 100) / 100).toLocaleString("en");

  function setStatus(state, text) {
    const badge = $("live-status");
    if (!badge) return;
    badge.className = "live-status live-status-" + state;
    badge.querySelector(".live-status-text").textContent = text;
  }

  function setNumber(id, value) {
    const node = $(id);
    if (!node) return;
    const text = fmt(value);
    if (node.textContent !== text) {
      node.textContent = text;
      node.classList.add("flash-up");
      window.setTimeout(() => node.classList.remove("flash-up"), 700);
    }
  }

  function cell(row, label, text, className) {
    const td = document.createElement("td");
    td.dataset.label = label;
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function health(instance, staleAfterS) {
    const reported = Date.parse(instance.timestamp || "");
    if (!reported || Date.now() - reported > staleAfterS * 1000) return ["stale", "not responding"];
    return instance.errorsPerSecond ? ["errors", "errors"] : ["healthy", "healthy"];
  }

  function duration(seconds) {
    const total = Math.floor(Number(seconds) || 0);
    if (total < 60) return total + " s";
    if (total < 3600) return Math.floor(total / 60) + " min";
    if (total < 86400) return Math.floor(total / 3600) + " h " + (Math.floor(total / 60) % 60) + " min";
    return Math.floor(total / 86400) + " d " + (Math.floor(total / 3600) % 24) + " h";
  }

  function ago(iso) {
    const at = Date.parse(iso || "");
    if (!at) return "never";
    const s = (Date.now() - at) / 1000;
    if (s < 45) return "just now";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function renderInstances(instances, staleAfterS) {
    const body = $("instances");
    if (!body) return;
    body.replaceChildren();
    if (!instances.length) {
      const row = body.insertRow();
      const td = cell(row, "", "No instance has reported yet.");
      td.colSpan = 8;
      return;
    }
    instances.forEach((item) => {
      const row = document.createElement("tr");
      const name = document.createElement("code");
      name.textContent = item.instanceId || "?";
      cell(row, "Instance", "").appendChild(name);
      const [state, label] = health(item, staleAfterS);
      const badge = document.createElement("span");
      badge.className = "badge badge-health-" + state;
      badge.textContent = label;
      cell(row, "Health", "").appendChild(badge);
      cell(row, "Connections", fmt(item.connections), "num");
      cell(row, "Msg/s", fmt(item.messagesPerSecond), "num");
      cell(row, "Err/s", fmt(item.errorsPerSecond), "num");
      cell(row, "Memory", Math.round((item.memoryRss || 0) / 1048576) + " MB", "num");
      cell(row, "Uptime", duration(item.uptime), "num");
      cell(row, "Last report", ago(item.timestamp));
      body.appendChild(row);
    });
  }

  function renderTransports(instances) {
    const node = $("m-transports");
    if (!node) return;
    const totals = {};
    instances.forEach((item) => {
      Object.entries(item.byTransport || {}).forEach(([name, count]) => {
        totals[name] = (totals[name] || 0) + count;
      });
    });
    node.replaceChildren();
    const names = Object.keys(totals).sort();
    if (!names.length) {
      const none = document.createElement("span");
      none.className = "muted";
      none.textContent = "no sockets";
      node.appendChild(none);
    }
    names.forEach((name) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = name + " ";
      const count = document.createElement("b");
      count.textContent = totals[name];
      chip.appendChild(count);
      node.appendChild(chip);
    });
  }

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, value));
    parent.appendChild(node);
    return node;
  }

  function drawChart() {
    const box = $("chart");
    if (!box) return;
    const width = Math.max(box.clientWidth, 200);
    const height = Math.max(box.clientHeight, 120);
    const left = 34, bottom = 18, top = 8;
    const now = Date.now();
    const recent = points.filter((p) => now - p.at <= WINDOW_MS);
    const peak = Math.max(1, ...recent.map((p) => Math.max(p.mps, p.eps)));
    const max = niceCeil(peak);
    const x = (at) => left + ((at - (now - WINDOW_MS)) / WINDOW_MS) * (width - left);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);

    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("preserveAspectRatio", "none");
    [0, 0.5, 1].forEach((f) => {
      const v = max * f;
      el("line", { x1: left, x2: width, y1: y(v), y2: y(v), class: "grid-line" }, svg);
      const label = el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis-label" }, svg);
      label.textContent = fmt(v);
    });
    const start = el("text", { x: left, y: height - 2, class: "axis-label" }, svg);
    start.textContent = "5 min ago";
    const end = el("text", { x: width, y: height - 2, "text-anchor": "end", class: "axis-label" }, svg);
    end.textContent = "now";
    if (recent.length) {
      const line = recent.map((p) => x(p.at).toFixed(1) + "," + y(p.mps).toFixed(1));
      const first = x(recent[0].at).toFixed(1), last = x(recent[recent.length - 1].at).toFixed(1);
      const base = y(0).toFixed(1);
      el("polygon", { points: first + "," + base + " " + line.join(" ") + " " + last + "," + base, class: "area-mps" }, svg);
      el("polyline", { points: line.join(" "), class: "line-mps" }, svg);
      el("polyline", {
        points: recent.map((p) => x(p.at).toFixed(1) + "," + y(p.eps).toFixed(1)).join(" "),
        class: "line-eps",
      }, svg);
    }
    box.replaceChildren(svg);
  }

  function niceCeil(value) {
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    const scaled = value / power;
    const step = scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10;
    return step * power;
  }

  // The last minutes survive moving between the dashboard's pages (this tab only).
  function restorePoints() {
    try {
      const saved = JSON.parse(window.sessionStorage.getItem(STORAGE_KEY) || "[]");
      saved.filter((p) => p && typeof p.at === "number").forEach((p) => points.push({
        at: p.at, mps: Number(p.mps) || 0, eps: Number(p.eps) || 0,
      }));
    } catch (error) {
      points.length = 0;
    }
  }

  function addPoint(at, mps, eps) {
    const point = { at: Number(at) || Date.now(), mps: Number(mps) || 0, eps: Number(eps) || 0 };
    if (points.length && point.at <= points[points.length - 1].at) return;
    points.push(point);
    while (points.length && Date.now() - points[0].at > WINDOW_MS) points.shift();
    try {
      window.sessionStorage.setItem(STORAGE_KEY, JSON.stringify(points));
    } catch (error) {
      // storage full or disabled: the chart just starts afresh next time
    }
    drawChart();
  }

  function render(stats, staleAfterS) {
    const totals = stats.totals || {};
    const instances = stats.instances || [];
    setNumber("m-connections", totals.connections);
    setNumber("m-users", totals.usersOnline);
    setNumber("m-mps", totals.messagesPerSecond);
    setNumber("m-eps", totals.errorsPerSecond);
    setNumber("m-rooms", totals.rooms);
    const noun = $("m-rooms-noun");
    if (noun) noun.textContent = totals.rooms === 1 ? "room" : "rooms";
    setNumber("m-instances", totals.instances);
    setNumber("m-total", instances.reduce((sum, item) => sum + (item.messagesTotal || 0), 0));
    const eps = $("m-eps");
    if (eps) eps.classList.toggle("metric-bad", Boolean(totals.errorsPerSecond));
    renderTransports(instances);
    renderInstances(instances, staleAfterS);
    addPoint(stats.at, totals.messagesPerSecond, totals.errorsPerSecond);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = $("live");
    if (!root) return;
    const staleAfterS = Number(root.dataset.staleAfter) || 10;
    restorePoints();
    addPoint(Number(root.dataset.initialAt), root.dataset.initialMps, root.dataset.initialEps);
    window.addEventListener("resize", drawChart);
    window.setInterval(drawChart, 5000); // the window slides even when nothing arrives

    if (typeof window.io !== "function") {
      setStatus("offline", root.dataset.available === "yes" ? "Live updates failed to load" : "Live updates off");
      return;
    }
    let firstToken = root.dataset.token;
    root.removeAttribute("data-token");
    const csrf = document.body.dataset.csrf;
    const socket = window.io(root.dataset.namespace || "/admin", {
      // The first connection uses the token minted with the page; reconnections ask for a fresh one.
      auth: (callback) => {
        if (firstToken) {
          const token = firstToken;
          firstToken = null;
          callback({ token });
          return;
        }
        fetch(root.dataset.tokenUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRFToken": csrf, Accept: "application/json" },
        })
          .then((response) => (response.ok ? response.json() : Promise.reject(new Error("signed out"))))
          .then((data) => callback({ token: data.token }))
          .catch(() => {
            setStatus("offline", "Signed out: reload to sign in");
            callback({});
          });
      },
    });
    socket.on("connect", () => setStatus("live", "Live"));
    socket.on("stats", (stats) => {
      setStatus("live", "Live");
      render(stats, staleAfterS);
    });
    socket.on("disconnect", (reason) => {
      setStatus("connecting", "Reconnecting…");
      if (reason === "io server disconnect") window.setTimeout(() => socket.connect(), 3000);
    });
    socket.on("connect_error", (error) => {
      setStatus("offline", "Offline: " + (error && error.message ? error.message : "cannot connect"));
      // A refusal by the server (e.g. an expired token) is not retried by the client itself.
      if (!socket.active) window.setTimeout(() => socket.connect(), 5000);
    });
    document.body.dataset.liveReady = "yes";
  });
})();
