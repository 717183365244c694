// One study: its series and instances, why and when it was ready, its revisions, the models run
// and their results, its reports as an EHR reads them, forwards and deliveries, the whole audit
// timeline; and, for an admin, release, reprocess and forward to a DICOM destination.

import { admin, all } from "../api.js";
import { action, announce, badge, card, dicomDate, facts, field, h, replace, select, when } from "../dom.js";
import { pagedTable, simpleTable } from "../table.js";

function reportCard(report) {
  const dr = report.diagnostic_report;
  const values = (o) => o.valueQuantity ? `${o.valueQuantity.value} ${o.valueQuantity.unit || ""}`
    : o.valueCodeableConcept ? (o.valueCodeableConcept.text || o.valueCodeableConcept.coding?.[0]?.display || "")
      : o.valueString || "";
  return h("article", { class: "card" },
    h("h3", {}, `${report.model}: ${dr.code?.text || dr.code?.coding?.[0]?.display || "report"}`),
    facts([
      ["Status", badge(dr.status === "amended" ? "held" : "ready", dr.status)],
      ["Effective", when(dr.effectiveDateTime)],
      ["Issued", when(dr.issued)],
      ["Conclusion", dr.conclusion || "—"],
      ["DiagnosticReport", h("code", {}, `DiagnosticReport/${dr.id}`)],
    ]),
    simpleTable("Observations", [
      { label: "Finding", cell: (o) => o.code?.text || o.code?.coding?.[0]?.display || "—" },
      { label: "Value", cell: values },
      { label: "Interpretation", cell: (o) => o.interpretation?.[0]?.coding?.[0]?.code || "—" },
    ], report.observations),
    h("details", {}, h("summary", {}, "The DiagnosticReport as FHIR JSON"), h("pre", {}, JSON.stringify(dr, null, 2))));
}

function actions(study, context, reload) {
  if (!context.can("studies")) return null;
  const destination = select([["", "Loading…"]], "");
  all("/destinations", { kind: "dicom" }).then((rows) => {
    replace(destination, rows.filter((d) => d.enabled).map((d) => h("option", { value: String(d.id) }, d.name)));
    if (!destination.options.length) replace(destination, h("option", { value: "" }, "No DICOM destination"));
  });
  const uid = encodeURIComponent(study.study_uid);
  return card("Actions",
    h("div", { class: "row" },
      ["held", "receiving"].includes(study.status)
        ? action("Release", async () => {
          const done = await admin(`/studies/${uid}/release`, { method: "POST" });
          await reload();
          return `Released as revision ${done.revision}.`;
        }, { kind: "primary" })
        : null,
      study.status !== "receiving"
        ? action("Reprocess", async () => {
          const done = await admin(`/studies/${uid}/reprocess`, { method: "POST" });
          await reload();
          return `Routed again as revision ${done.revision}.`;
        }, { confirm: "Route this study again as a new revision?" })
        : null),
    h("div", { class: "row" }, field("Forward to", destination),
      action("Forward", async () => {
        await admin(`/studies/${uid}/forward`, { method: "POST", json: { destination_id: Number(destination.value) } });
        await reload();
        return "Forward queued.";
      })));
}

export async function renderStudy(main, context, studyUid) {
  const uid = encodeURIComponent(studyUid);
  async function reload() {
    const [study, reports, forwards, destinations] = await Promise.all([
      admin(`/studies/${uid}`),
      admin(`/studies/${uid}/reports`),
      admin("/forwards", { query: { study_uid: studyUid, limit: 100 } }),
      all("/destinations"),
    ]);
    const named = new Map(destinations.map((d) => [d.id, d.name]));
    const destination = (id) => named.get(id) || `#${id}`;
    const delivered = await admin("/deliveries", { query: { correlation_id: study.correlation_id, limit: 100 } });
    const timeline = pagedTable({
      caption: "Audit timeline: every record, job, forward and delivery, oldest first",
      path: `/studies/${uid}/timeline`,
      limit: 50,
      columns: [
        { label: "When", sort: "at", class: "nowrap", cell: (e) => when(e.at) },
        { label: "Kind", sort: "kind", cell: (e) => e.kind },
        { label: "What", sort: "what", cell: (e) => e.what },
        { label: "Who", cell: (e) => e.detail.who || "—" },
        { label: "Detail", class: "detail", cell: (e) => Object.entries(e.detail).filter(([k]) => !["who", "id", "type", "action"].includes(k))
          .map(([k, v]) => `${k}=${v}`).join(" ") },
      ],
    });
    replace(main,
      h("p", {}, h("a", { href: "#/studies" }, "← Studies")),
      h("h1", {}, study.study_description || "Study"),
      h("p", { class: "mono" }, study.study_uid),
      h("div", { class: "grid" },
        card("Study", facts([
          ["State", badge(study.status)],
          ["Revision", String(study.revision)],
          ["Ready because", study.ready_reason || "—"],
          ["Ready at", when(study.ready_at)],
          ["Patient ID", study.patient_id || "—"],
          ["Accession", study.accession_number || "—"],
          ["Study date", dicomDate(study.study_date)],
          ["Calling AE", `${study.calling_ae || "—"} from ${study.source_address || "—"}`],
          ["First received", when(study.first_received_at)],
          ["Last received", when(study.last_received_at)],
          ["Series / instances", `${study.series.length} / ${study.instances}`],
        ])),
        actions(study, context, reload)),
      card("Revisions", simpleTable("Each time the study was declared ready", [
        { label: "Revision", num: true, cell: (r) => String(r.revision) },
        { label: "Because", cell: (r) => r.reason },
        { label: "At", cell: (r) => when(r.at) },
        { label: "By", cell: (r) => r.who },
        { label: "Instances", num: true, cell: (r) => String(r.instances) },
      ], study.revisions, "Not declared ready yet.", { quiet: true })),
      card("Series", simpleTable("Series and their instances", [
        { label: "Number", num: true, cell: (s) => (s.series_number ?? "—").toString() },
        { label: "Modality", cell: (s) => s.modality || "—" },
        { label: "Body part", cell: (s) => s.body_part || "—" },
        { label: "Description", cell: (s) => s.series_description || "—" },
        { label: "Instances", num: true, cell: (s) => String(s.instances) },
      ], study.series)),
      card("Models run", simpleTable("Inference jobs, oldest first", [
        { label: "Model", cell: (j) => h("a", { href: `#/models/${encodeURIComponent(j.model)}` }, j.model) },
        { label: "Version", cell: (j) => j.model_version },
        { label: "Revision", num: true, cell: (j) => String(j.revision) },
        { label: "State", cell: (j) => badge(j.status) },
        { label: "Queued", cell: (j) => when(j.created_at) },
        { label: "Finished", cell: (j) => when(j.finished_at) },
        { label: "Error", cell: (j) => j.error || "—" },
      ], study.jobs, "No model ran on this study.")),
      card("Reports as an EHR reads them", reports.items.length ? reports.items.map(reportCard) : h("p", { class: "muted" }, "No report yet.")),
      h("div", { class: "grid" },
        card("Forwards", simpleTable("Forwards of this study", [
          { label: "Destination", cell: (f) => destination(f.destination_id) },
          { label: "Rule", cell: (f) => f.rule || "—" },
          { label: "Revision", num: true, cell: (f) => String(f.revision) },
          { label: "State", cell: (f) => badge(f.status) },
          { label: "Instances sent", num: true, cell: (f) => `${f.instances.sent}/${f.instances.sent + f.instances.pending + f.instances.failed}` },
        ], forwards.items, "Not forwarded.")),
        card("Deliveries", simpleTable("Messages sent about this study", [
          { label: "What", cell: (d) => d.subject },
          { label: "Destination", cell: (d) => destination(d.destination_id) },
          { label: "State", cell: (d) => badge(d.status) },
          { label: "ACK", cell: (d) => d.ack_code || "—" },
          { label: "Attempts", num: true, cell: (d) => String(d.attempts) },
        ], delivered.items, "Nothing delivered."))),
      card("Timeline", timeline.element));
    await timeline.load();
  }
  await reload();
  announce("Study shown");
}
