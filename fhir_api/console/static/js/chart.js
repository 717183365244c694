// Charts as inline SVG: a line chart of counts per step of time, and bars per day. Each has a
// title and a text summary for screen readers (role="img" with aria-labelledby).

import { h, uid } from "./dom.js";

const W = 480;
const H = 200;
const PAD = { left: 40, right: 10, top: 10, bottom: 24 };
const two = (n) => String(n).padStart(2, "0");

function niceMax(value) {
  if (value <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((c) => c >= value);
}

function axes(max, labels, unit) {
  const plotH = H - PAD.top - PAD.bottom;
  const plotW = W - PAD.left - PAD.right;
  const parts = [];
  for (let i = 0; i <= 4; i += 1) {
    const y = PAD.top + plotH - (plotH * i) / 4;
    const value = (max * i) / 4;
    parts.push(h("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
    parts.push(h("text", { x: PAD.left - 4, y: y + 4, "text-anchor": "end" }, `${Number.isInteger(value) ? value : value.toFixed(1)}${unit}`));
  }
  parts.push(h("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: PAD.top + plotH, y2: PAD.top + plotH }));
  const every = Math.max(1, Math.ceil(labels.length / 6));
  labels.forEach((label, i) => {
    if (i % every !== 0) return;
    const x = PAD.left + (plotW * (i + 0.5)) / labels.length;
    parts.push(h("text", { x, y: H - 6, "text-anchor": "middle" }, label));
  });
  return parts;
}

function frame(title, summary, body, legend) {
  const titleId = uid("chart");
  const descId = uid("desc");
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${titleId} ${descId}` },
    h("title", { id: titleId }, title), h("desc", { id: descId }, summary), body);
  return h("figure", { class: "chart" }, h("figcaption", {}, title), svg,
    legend ? h("div", { class: "legend", "aria-hidden": "true" }, legend.map((name, i) => h("span", { class: `key${i}` }, name))) : null,
    h("p", { class: "visually-hidden" }, summary));
}

// values: counts per step from `start` (a Date), `stepSeconds` apart.
export function lineChart({ title, values, start, stepSeconds = 60, unit = "" }) {
  const max = niceMax(Math.max(0, ...values));
  const plotH = H - PAD.top - PAD.bottom;
  const plotW = W - PAD.left - PAD.right;
  const points = values.map((v, i) => {
    const x = PAD.left + (plotW * (i + 0.5)) / Math.max(values.length, 1);
    const y = PAD.top + plotH - (plotH * v) / max;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const labels = values.map((_, i) => {
    const t = new Date(start.getTime() + i * stepSeconds * 1000);
    return `${two(t.getHours())}:${two(t.getMinutes())}`;
  });
  const total = values.reduce((a, b) => a + b, 0);
  const peak = Math.max(0, ...values);
  const summary = `${total} in all over ${values.length} minutes; at most ${peak} in one minute; ${values.at(-1) ?? 0} in the last minute.`;
  return frame(title, summary, [axes(max, labels, unit), h("polyline", { class: "s0", points: points.join(" ") })]);
}

// bars: [{ label, values: [a, b] }] drawn side by side, one colour per series.
export function barChart({ title, bars, series, unit = "", max: fixedMax }) {
  const max = fixedMax || niceMax(Math.max(0, ...bars.flatMap((b) => b.values)));
  const plotH = H - PAD.top - PAD.bottom;
  const plotW = W - PAD.left - PAD.right;
  const slot = plotW / Math.max(bars.length, 1);
  const width = Math.max(1, (slot * 0.8) / series.length);
  const rects = bars.flatMap((bar, i) => bar.values.map((v, s) => {
    const height = (plotH * v) / max;
    return h("rect", { class: `bar${s}`, x: PAD.left + slot * i + slot * 0.1 + width * s, y: PAD.top + plotH - height, width, height });
  }));
  const summary = bars.length
    ? bars.map((b) => `${b.label}: ${b.values.map((v, s) => `${series[s]} ${v}${unit}`).join(", ")}`).join("; ")
    : "No data in this period.";
  return frame(title, summary, [axes(max, bars.map((b) => b.label), unit), rects], series);
}
