// Small SVG charts for the studio's live panel: a time chart and sparklines. No library.

const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An upper bound of four equal whole-number steps (1-2-5 each), at least `floor`. */
function niceMax(value, floor = 4) {
  const step = Math.max(value, floor) / 4;
  const mag = 10 ** Math.floor(Math.log10(step));
  for (const m of [1, 2, 5, 10]) if (m * mag >= step) return 4 * Math.max(1, m * mag);
  return 40 * mag;
}

function pathOf(points) {
  return points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
}

/** A tiny trend line (decorative; the tile shows the number). */
export function sparkline(values, { width = 120, height = 30 } = {}) {
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "spark", "aria-hidden": "true", preserveAspectRatio: "none",
  });
  const vals = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  if (vals.length < 2) {
    svg.append(el("line", { x1: 0, y1: height - 2, x2: width, y2: height - 2, class: "spark-line" }));
    return svg;
  }
  const max = Math.max(...vals);
  const min = Math.min(...vals, 0);
  const span = max - min || 1;
  const pts = vals.map((v, i) => [
    (i / (vals.length - 1)) * width,
    height - 2 - ((v - min) / span) * (height - 4),
  ]);
  svg.append(
    el("path", { d: `${pathOf(pts)}L${width},${height}L0,${height}Z`, class: "spark-area" }),
    el("path", { d: pathOf(pts), class: "spark-line" }),
  );
  return svg;
}

/**
 * Viewers (area, left axis) and chat per minute (line, right axis) over the last
 * `windowMs`, with a marker for every sample in which orders came in.
 */
export function lineChart(samples, { windowMs = 600000, width = 640, height = 200 } = {}) {
  const pad = { l: 36, r: 40, t: 12, b: 24 };
  const now = samples.length ? Math.max(Date.now(), samples[samples.length - 1].t) : Date.now();
  const t0 = now - windowMs;
  const plotW = width - pad.l - pad.r;
  const plotH = height - pad.t - pad.b;
  const x = (t) => pad.l + ((t - t0) / windowMs) * plotW;
  const vMax = niceMax(Math.max(0, ...samples.map((s) => s.viewers || 0)));
  const cMax = niceMax(Math.max(0, ...samples.map((s) => s.chat || 0)));
  const yV = (v) => pad.t + plotH - (v / vMax) * plotH;
  const yC = (v) => pad.t + plotH - (v / cMax) * plotH;

  const last = samples[samples.length - 1];
  const peak = Math.max(0, ...samples.map((s) => s.viewers || 0));
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img",
    "aria-label": last
      ? `Viewers now ${last.viewers} (peak ${peak}), ${last.chat} chat messages per minute, ${last.orders} orders`
      : "No data yet",
  });

  for (let i = 0; i <= 4; i += 1) {
    const y = pad.t + (plotH * i) / 4;
    svg.append(el("line", { x1: pad.l, x2: width - pad.r, y1: y, y2: y, class: "grid" }));
    svg.append(el("text", { x: pad.l - 6, y: y + 4, class: "axis left" }, String(Math.round(vMax * (1 - i / 4)))));
    svg.append(el("text", { x: width - pad.r + 6, y: y + 4, class: "axis right" }, String(Math.round(cMax * (1 - i / 4)))));
  }
  const seconds = Math.round(windowMs / 1000);
  const step = [15, 30, 60, 120, 300].find((s) => seconds / s <= 6) || 600;
  for (let s = 0; s <= seconds; s += step) {
    const label = s === 0 ? "now" : s % 60 === 0 ? `-${s / 60}m` : s > 60 ? `-${Math.floor(s / 60)}m${s % 60}s` : `-${s}s`;
    svg.append(el("text", { x: x(now - s * 1000), y: height - 6, class: "axis bottom" }, label));
  }

  if (samples.length < 2) {
    svg.append(el("text", { x: pad.l + plotW / 2, y: pad.t + plotH / 2, class: "empty-note" }, "Collecting data…"));
    return svg;
  }
  const base = pad.t + plotH;
  const known = samples.filter((s) => typeof s.viewers === "number");
  const pv = known.map((s) => [x(s.t), yV(s.viewers)]);
  if (pv.length >= 2) svg.append(el("path", {
    d: `${pathOf(pv)}L${pv[pv.length - 1][0].toFixed(1)},${base}L${pv[0][0].toFixed(1)},${base}Z`,
    class: "area s-viewers-area",
  }));
  if (pv.length >= 2) svg.append(el("path", { d: pathOf(pv), class: "line s-viewers" }));
  svg.append(el("path", { d: pathOf(samples.map((s) => [x(s.t), yC(s.chat || 0)])), class: "line s-chat" }));
  for (let i = 1; i < samples.length; i += 1) {
    if (typeof samples[i].orders !== "number" || typeof samples[i - 1].orders !== "number") continue;
    const n = samples[i].orders - samples[i - 1].orders;
    if (n > 0) {
      const dot = el("circle", { cx: x(samples[i].t), cy: base - 5, r: Math.min(7, 3 + n), class: "dot s-orders" });
      dot.append(el("title", {}, `${n} order${n === 1 ? "" : "s"}`));
      svg.append(dot);
    }
  }
  return svg;
}
