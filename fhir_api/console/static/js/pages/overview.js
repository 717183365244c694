// Overview: every process and its health, traffic per minute, latency per model, backlogs,
// dead letters, open circuits and rules that cannot run; refreshed every 30 seconds.

import { admin } from "../api.js";
import { lineChart } from "../chart.js";
import { badge, card, h, replace, seconds, when } from "../dom.js";
import { simpleTable } from "../table.js";

// [key, label, the page that shows them (none: no page lists them)]
const BACKLOGS = [
  ["outbox", "Outbox events not yet published", ""],
  ["forwards", "Study forwards pending", "#/destinations"],
  ["deliveries", "Deliveries pending", "#/destinations"],
  ["subscription_notifications", "Subscription notifications pending", ""],
  ["dead_letters", "Dead letters open", "#/dead-letters"],
  ["dead_forwards", "Dead forwards", "#/destinations"],
  ["dead_deliveries", "Dead deliveries", "#/destinations"],
];

function tiles(backlogs) {
  return h("div", { class: "tiles" }, BACKLOGS.map(([key, label, href]) => {
    const n = backlogs[key] ?? 0;
    const kind = n && key.startsWith("dead") ? "bad" : n > 100 ? "warn" : "";
    return h(href ? "a" : "div", { class: `tile ${kind}`, href: href || undefined }, h("strong", {}, String(n)), label);
  }));
}

function processes(rows) {
  return simpleTable("Every process and its last heartbeat", [
    { label: "Process", cell: (p) => p.name },
    { label: "Kind", cell: (p) => p.kind },
    { label: "Host", cell: (p) => p.host },
    { label: "PID", num: true, cell: (p) => String(p.pid) },
    { label: "Version", cell: (p) => p.version || "—" },
    { label: "Started", cell: (p) => when(p.started_at) },
    { label: "Last heartbeat", cell: (p) => when(p.last_seen_at) },
    { label: "Health", cell: (p) => (p.healthy ? badge("running") : badge("not beating")) },
  ], rows, "No process has reported a heartbeat yet.", { quiet: true });
}

function warnings(list) {
  if (!list.length) return null;
  return h("section", { class: "notice warn", "aria-labelledby": "cannot-run" },
    h("h2", { id: "cannot-run" }, "Rules that cannot run"),
    h("p", {}, "Studies these enabled rules match get no job:"),
    h("ul", {}, list.map((w) => h("li", {}, h("a", { href: "#/rules" }, w.rule), " runs ",
      h("a", { href: `#/models/${encodeURIComponent(w.model)}` }, w.model), `: ${w.problem}`))));
}

async function draw(main, hours) {
  const o = await admin("/overview", { query: { hours } });
  const start = new Date(o.traffic.start);
  const down = o.processes.filter((p) => !p.healthy).length;
  replace(main,
    h("div", { class: "spread" }, h("h1", {}, "Overview"), h("p", { class: "muted" }, `As of ${when(o.at)}; refreshed every 30 seconds.`)),
    down ? h("p", { class: "notice bad", role: "alert" }, `${down} process${down > 1 ? "es are" : " is"} not beating.`) : null,
    warnings(o.warnings),
    card("Processes", processes(o.processes)),
    card(`Traffic over the last ${hours} hours, per minute`, h("div", { class: "grid" },
      lineChart({ title: "DICOM instances received", values: o.traffic.instances, start, stepSeconds: o.traffic.step_seconds }),
      lineChart({ title: "HL7 messages received", values: o.traffic.hl7_messages, start, stepSeconds: o.traffic.step_seconds }),
      lineChart({ title: "FHIR requests", values: o.traffic.fhir_requests, start, stepSeconds: o.traffic.step_seconds }))),
    h("div", { class: "grid" },
      card("End-to-end latency per model", simpleTable(`Last instance received to report, last ${hours} hours`, [
        { label: "Model", cell: (l) => h("a", { href: `#/models/${encodeURIComponent(l.model)}` }, l.model) },
        { label: "Reports", num: true, cell: (l) => String(l.reports) },
        { label: "p50", num: true, cell: (l) => seconds(l.p50_seconds) },
        { label: "p95", num: true, cell: (l) => seconds(l.p95_seconds) },
      ], o.latency, "No report in this period.")),
      card("Open circuits", o.open_circuits.length
        ? h("ul", {}, o.open_circuits.map((name) => h("li", {}, h("a", { href: "#/destinations" }, name), " — not tried until it cools down")))
        : h("p", {}, badge("ok", "None"), " Every destination is being tried."))),
    card("Backlogs and what needs a person", tiles(o.backlogs)));
}

export async function render(main, context) {
  const hours = 3;
  await draw(main, hours);
  // Not while someone is working in the page: a redraw would move their focus.
  const refresh = () => {
    const busy = main.contains(document.activeElement) && document.activeElement !== main;
    if (!busy) draw(main, hours).catch(() => {});
  };
  const timer = window.setInterval(refresh, 30000);
  context.onLeave(() => window.clearInterval(timer));
}
