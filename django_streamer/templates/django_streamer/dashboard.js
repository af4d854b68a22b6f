(function () {
  "use strict";
  // Inlined by dashboard.html (the page loads nothing from elsewhere).
  // Every figure comes from the JSON; the page computes no rate of its own.
  const root = document.getElementById("content-main");
  const url = root.dataset.url;
  const WINDOW = 60;   // seconds of history drawn
  const TOP = 6;       // streams drawn by name; the rest are summed as "other"
  // Okabe-Ito hues, told apart with the common colour-vision deficiencies; a
  // lighter variant of each for dark backgrounds. Fixed, not the admin's
  // variables (two of those are background tints).
  const PALETTE = {
    light: ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#8F6A00", "#5B3A99"],
    dark: ["#56B4E9", "#FF8C4A", "#3DD6A3", "#F0A3D0", "#F0E442", "#B9A3FF"],
  };
  const OTHER = {light: "#6B6B6B", dark: "#B0B0B0"};
  const history = [];   // [{t, rates: {stream: bytes/s}}], oldest first
  const colours = {};   // stream -> palette index, kept while it stays drawn
  let last = null;

  function scaled(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return [n, units[i]];
  }
  function bytes(n) {
    const [v, unit] = scaled(n);
    return (unit === "B" ? Math.round(v) : v.toFixed(1)) + " " + unit;
  }
  function rate(n) { return bytes(n) + "/s"; }
  function seconds(s) {
    if (s === null || s === undefined) return "–";
    return s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(2) + " s";
  }
  function ratio(r) {
    // Source bytes per byte sent; null when nothing of that stream was compressed.
    return r === null || r === undefined ? "\u2014" : r.toFixed(2) + "\u00d7";
  }
  function cell(text, cls, attrs) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    for (const [k, v] of Object.entries(attrs || {})) td.setAttribute(k, v);
    return td;
  }
  function fill(table, rows, empty, columns) {
    const body = table.tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const tr = body.insertRow();
      tr.appendChild(cell(empty, "streamer-empty", {colspan: columns}));
      return;
    }
    for (const row of rows) {
      const tr = body.insertRow();
      for (const c of row) tr.appendChild(c);
    }
  }
  function theme() {
    // Whatever sets the admin's theme (media query, toggle), its background tells.
    const bg = getComputedStyle(document.body).backgroundColor.match(/\d+(\.\d+)?/g) || [255, 255, 255];
    const [r, g, b] = bg.map(Number);
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255 < 0.5 ? "dark" : "light";
  }
  function niceStep(top) {
    // A 1, 2, 2.5 or 5 times a power of ten step giving four or five gridlines.
    const raw = top / 4;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
    return 10 * power;
  }
  function series() {
    // The TOP streams busiest over the window by name, the rest summed as "other".
    const peak = {};
    for (const h of history) for (const [n, v] of Object.entries(h.rates)) peak[n] = Math.max(peak[n] || 0, v);
    const names = Object.keys(peak).sort((a, b) => peak[b] - peak[a] || a.localeCompare(b));
    const shown = names.slice(0, TOP).sort();
    const rest = names.slice(TOP);
    for (const n of Object.keys(colours)) if (!shown.includes(n)) delete colours[n];
    for (const n of shown) {
      if (colours[n] === undefined) {
        const used = new Set(Object.values(colours));
        let i = 0;
        while (used.has(i)) i++;
        colours[n] = i;
      }
    }
    const out = shown.map(n => ({name: n, colour: colours[n], points: history.map(h => ({t: h.t, v: h.rates[n] || 0}))}));
    if (rest.length) {
      out.push({name: `other (${rest.length})`, colour: -1,
                points: history.map(h => ({t: h.t, v: rest.reduce((sum, n) => sum + (h.rates[n] || 0), 0)}))});
    }
    return out;
  }
  function draw() {
    const canvas = document.getElementById("streamer-chart");
    const ratio = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth, cssH = canvas.clientHeight;
    canvas.width = Math.round(cssW * ratio);
    canvas.height = Math.round(cssH * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const mode = theme();
    const style = getComputedStyle(document.documentElement);
    const ink = style.getPropertyValue("--body-quiet-color").trim() || (mode === "dark" ? "#aaa" : "#666");
    const grid = style.getPropertyValue("--hairline-color").trim() || "#ccc";
    const left = 84, right = 14, top = 12, bottom = 38;
    const w = cssW - left - right, h = cssH - top - bottom;
    const lines = series();
    let peak = 0;
    for (const s of lines) for (const p of s.points) peak = Math.max(peak, p.v);
    const [peakScaled, unit] = scaled(Math.max(peak, 1));
    const factor = peak > 0 ? peak / peakScaled : 1;
    const step = niceStep(Math.max(peakScaled, 1e-9));
    const ceiling = Math.max(step * Math.ceil(peakScaled / step), step);
    const y = v => top + h - h * (v / factor) / ceiling;
    const now = history.length ? history[history.length - 1].t : 0;
    const x = t => left + w * (1 - (now - t) / WINDOW);
    ctx.clearRect(0, 0, cssW, cssH);
    ctx.font = "11px sans-serif";
    ctx.lineWidth = 1;
    ctx.fillStyle = ink;
    ctx.strokeStyle = grid;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let v = 0; v <= ceiling + step / 2; v += step) {
      const yy = Math.round(y(v * factor)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(left + w, yy); ctx.stroke();
      ctx.fillText(`${+v.toFixed(2)} ${unit}/s`, left - 6, yy);
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (let ago = WINDOW; ago >= 0; ago -= 15) {
      const xx = Math.round(left + w * (1 - ago / WINDOW)) + 0.5;
      ctx.beginPath(); ctx.moveTo(xx, top + h); ctx.lineTo(xx, top + h + 4); ctx.stroke();
      ctx.fillText(ago ? `${ago} s ago` : "now", xx, top + h + 6);
    }
    ctx.fillText("time (seconds ago)", left + w / 2, top + h + 21);
    ctx.save();
    ctx.translate(4, top + h / 2); ctx.rotate(-Math.PI / 2);
    ctx.fillText("throughput", 0, 0);
    ctx.restore();
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    const legend = document.getElementById("streamer-legend");
    legend.replaceChildren();
    for (const s of lines) {
      const colour = s.colour < 0 ? OTHER[mode] : PALETTE[mode][s.colour];
      ctx.strokeStyle = colour;
      ctx.beginPath();
      s.points.forEach((p, j) => { j ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v)); });
      ctx.stroke();
      const item = document.createElement("span");
      item.style.setProperty("--swatch", colour);
      item.dataset.series = s.name;
      item.dataset.colour = colour;
      item.textContent = `${s.name}: ${rate(s.points.length ? s.points[s.points.length - 1].v : 0)}`;
      legend.appendChild(item);
    }
  }
  function update(data) {
    document.getElementById("streamer-processes").textContent = data.processes;
    document.getElementById("streamer-updated").textContent = new Date(data.time * 1000).toLocaleTimeString();
    const rates = {};
    const rows = [];
    for (const [name, s] of Object.entries(data.streams)) {
      rates[name] = s.bytes_per_second;
      const f = (k, v) => cell(v, "num", {"data-stream": name, "data-figure": k});
      const now = f("throughput", rate(s.bytes_per_second));
      now.dataset.value = s.bytes_per_second;
      const compression = f("compression_ratio", ratio(s.compression_ratio));
      compression.dataset.value = s.compression_ratio === null ? "" : s.compression_ratio;
      rows.push([
        cell(name, "", {"data-stream": name}), f("started", s.started), f("active", s.active),
        f("completed", s.completed), f("aborted", s.aborted), f("failed", s.failed),
        f("lost", s.lost), f("drained", s.drained), f("rejected", s.rejected),
        f("bytes", bytes(s.bytes)), compression, f("chunks", s.chunks),
        f("chunk_size_avg", bytes(s.chunk_size_avg)), f("chunk_size_max", bytes(s.chunk_size_max)),
        f("ttfb_avg", seconds(s.ttfb_avg)), f("duration_avg", seconds(s.duration_avg)), now,
      ]);
    }
    history.push({t: data.time, rates: rates});
    while (history.length && data.time - history[0].t > WINDOW) history.shift();
    fill(document.getElementById("streamer-streams"), rows, "No streams yet.", 17);
    const pools = Object.entries(data.pools).map(([name, p]) => [
      cell(name), cell(p.in_use, "num"),
      cell(p.busiest_key === null ? "\u2014" : p.busiest_key, "num", {"data-pool": name, "data-figure": "busiest_key"}),
      cell(p.limit, "num"), cell(p.admitted, "num"),
      cell(p.rejected, "num"), cell(seconds(p.wait_avg), "num"),
    ]);
    fill(document.getElementById("streamer-pools"), pools, "No limited views used yet.", 7);
    const active = data.active.map(a => [
      cell(a.stream), cell(a.path), cell(a.host === undefined ? a.pid : `${a.host}:${a.pid}`, "num"), cell(new Date(a.started * 1000).toLocaleTimeString()),
      cell(bytes(a.bytes), "num", {"data-active-bytes": a.bytes}), cell(rate(a.bytes_per_second), "num"),
    ]);
    fill(document.getElementById("streamer-active"), active, "Nothing streaming.", 6);
    const hidden = document.getElementById("streamer-active-hidden");
    hidden.hidden = !data.active_hidden;
    hidden.dataset.value = data.active_hidden;
    hidden.textContent = `${data.active_hidden} more active stream${data.active_hidden === 1 ? "" : "s"} ` +
      "not shown: the active-streams table is full (still counted under Active above).";
    const errors = document.getElementById("streamer-store-errors");
    errors.hidden = !data.store_errors;
    errors.querySelector("[data-figure]").textContent = data.store_errors;
    fleet(data);
    last = data;
    draw();
  }
  function fleet(data) {
    // Only with STREAMER_REDIS_URL: the JSON then has "hosts", and its figures are totals.
    const section = document.getElementById("streamer-hosts-section");
    section.hidden = !data.hosts;
    document.getElementById("streamer-scope").textContent =
      data.hosts && !data.fleet ? `Fleet-wide over ${data.hosts.length} host(s)` : "Host-wide";
    const error = document.getElementById("streamer-fleet-error");
    error.hidden = !data.fleet;
    error.querySelector("[data-figure]").textContent = data.fleet || "";
    // Hosts whose snapshot in Redis was malformed: skipped, and said so.
    const bad = data.unreadable || [];
    const unreadable = document.getElementById("streamer-unreadable");
    unreadable.hidden = !bad.length;
    unreadable.dataset.value = bad.length;
    unreadable.textContent = bad.length === 1
      ? `1 host's snapshot was unreadable (${bad[0]}): not counted.`
      : `${bad.length} hosts' snapshots were unreadable (${bad.join(", ")}): not counted.`;
    if (!data.hosts) return;
    const rows = data.hosts.map(h => [
      cell(h.host, "", {"data-host": h.host}), cell(h.processes, "num"),
      cell(h.active, "num", {"data-host-active": h.host}), cell(rate(h.bytes_per_second), "num"),
      cell(seconds(h.last_seen), "num"),
    ]);
    fill(document.getElementById("streamer-hosts"), rows, "No host yet.", 5);
  }
  // For the browser test: what the page was given, and what the chart drew.
  window.streamerDashboard = {last: () => last, series: series};
  window.addEventListener("resize", draw);
  async function poll() {
    try {
      const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (response.ok) update(await response.json());
    } catch (e) { /* the next poll will tell */ }
    setTimeout(poll, 1000);
  }
  poll();
})();
