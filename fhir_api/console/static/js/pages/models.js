// Models: every registered model with its versions and running workers; a model's page with its
// versions (activate, roll back, retire), its jobs, failures, latency and share of positive
// findings per day; and uploading a package.

import { admin, call } from "../api.js";
import { barChart } from "../chart.js";
import { action, badge, card, facts, field, h, replace, seconds, when } from "../dom.js";
import { pagedTable, simpleTable } from "../table.js";

const TYPES = { zip: "application/zip", gz: "application/gzip", tgz: "application/gzip" };

function upload(list) {
  const file = h("input", { type: "file", accept: ".zip,.tar.gz,.tgz" });
  const result = h("div", { "aria-live": "polite" });
  const send = action("Upload package", async () => {
    const chosen = file.files[0];
    if (!chosen) throw new Error("Choose a package archive first.");
    const type = TYPES[chosen.name.split(".").pop().toLowerCase()];
    if (!type) throw new Error("A package is a .zip or a .tar.gz archive.");
    const model = await call("/admin/models", { method: "POST", body: chosen, contentType: type });
    await list.load();
    const newest = model.versions.at(-1);
    replace(result, h("p", { class: "notice ok" }, `${model.name} ${newest.version} registered (inactive). `,
      h("a", { href: `#/models/${encodeURIComponent(model.name)}` }, `Open ${model.name} to activate it`)));
    return `${model.name} ${newest.version} registered.`;
  }, { kind: "primary" });
  return card("Upload a model package",
    h("p", { class: "muted" }, "The package directory (manifest.json and its artifact) as a zip or tar.gz archive. It is registered inactive."),
    h("div", { class: "row" }, field("Package archive", file, { wide: true }), send), result);
}

async function renderModel(main, context, name) {
  const path = `/models/${encodeURIComponent(name)}`;
  async function draw() {
    const [model, figures] = await Promise.all([admin(path), admin(`${path}/figures`, { query: { days: 30 } })]);
    const canChange = context.can("models");
    const versionActions = (v) => (canChange ? h("div", { class: "row" },
      v.status !== "active" && v.status !== "retired"
        ? action(`Activate ${v.version}`, async () => { await admin(`${path}/${encodeURIComponent(v.version)}/activate`, { method: "POST" }); await draw(); return `${name} ${v.version} is active.`; }, { kind: "primary" })
        : null,
      v.status !== "retired"
        ? action(`Retire ${v.version}`, async () => { await admin(`${path}/${encodeURIComponent(v.version)}/retire`, { method: "POST" }); await draw(); return `${name} ${v.version} retired.`; }, { kind: "danger", confirm: `Retire ${name} ${v.version} for good?` })
        : null) : "—");
    const days = figures.history.map((b) => ({ label: b.start.slice(5, 10), b }));
    replace(main,
      h("p", {}, h("a", { href: "#/models" }, "← Models")),
      h("h1", {}, name),
      model.workers ? null : h("p", { class: "notice warn", role: "status" }, "No worker runs this model now: its jobs wait."),
      h("div", { class: "grid" },
        card("Last 30 days", facts([
          ["Active version", model.active_version || "none"],
          ["Workers running", String(model.workers)],
          ["Jobs", String(figures.jobs)],
          ["Failures", `${figures.failed}${figures.jobs ? ` (${((100 * figures.failed) / figures.jobs).toFixed(1)}%)` : ""}`],
          ["Latency p50 / p95", figures.latency ? `${seconds(figures.latency.p50_seconds)} / ${seconds(figures.latency.p95_seconds)}` : "—"],
        ]), canChange ? action("Roll back to the previous version", async () => {
          const done = await admin(`${path}/rollback`, { method: "POST" });
          await draw();
          return `${name} ${done.active_version} is active again.`;
        }) : null),
        card("Per day, last 30 days",
          barChart({ title: "Jobs and failures", series: ["jobs", "failed"], bars: days.map((d) => ({ label: d.label, values: [d.b.jobs, d.b.failed] })) }),
          barChart({ title: "Share of reports with a positive finding", series: ["positive %"], unit: "%", max: 100,
            bars: days.map((d) => ({ label: d.label, values: [d.b.reports ? Math.round((100 * d.b.positive) / d.b.reports) : 0] })) }))),
      card("Versions", simpleTable("Versions, oldest upload first", [
        { label: "Version", cell: (v) => v.version },
        { label: "Framework", cell: (v) => v.framework },
        { label: "State", cell: (v) => badge(v.status) },
        { label: "Uploaded", cell: (v) => when(v.uploaded_at) },
        { label: "Activated", cell: (v) => when(v.activated_at) },
        { label: "Actions", cell: versionActions },
      ], model.versions, "None.", { quiet: true })));
  }
  await draw();
}

export async function render(main, context, args) {
  if (args[0]) {
    await renderModel(main, context, args[0]);
    return;
  }
  const list = pagedTable({
    caption: "Registered models",
    path: "/models",
    columns: [
      { label: "Model", sort: "name", cell: (m) => h("a", { href: `#/models/${encodeURIComponent(m.name)}` }, m.name) },
      { label: "Active version", sort: "active_version", cell: (m) => m.active_version || badge("warn", "none") },
      { label: "Versions", num: true, cell: (m) => String(m.versions.length) },
      { label: "Workers", sort: "workers", num: true, cell: (m) => (m.workers ? String(m.workers) : badge("warn", "0")) },
    ],
  });
  const warnings = await admin("/rules/warnings");
  replace(main, h("h1", {}, "Models"),
    warnings.items.length ? h("div", { class: "notice warn", role: "status" }, h("strong", {}, "Enabled rules whose model will not run: "),
      h("ul", {}, warnings.items.map((w) => h("li", {}, `${w.rule} runs ${w.model}: ${w.problem}`)))) : null,
    h("div", { class: "card" }, list.element),
    context.can("models") ? upload(list) : null);
  await list.load();
}
