// Studies: search by patient, accession, study date, modality, calling AE and state; a study's page
// is pages/study.js.

import { badge, dicomDate, field, h, replace, select, when } from "../dom.js";
import { pagedTable } from "../table.js";

const STATES = [["", "any"], ["receiving", "receiving"], ["ready", "ready"], ["held", "held"], ["dropped", "dropped"]];

export async function render(main, context, args) {
  if (args[0]) {
    const { renderStudy } = await import("./study.js");
    await renderStudy(main, context, args[0]);
    return;
  }
  const inputs = {
    patient_id: h("input", { type: "search", name: "patient_id" }),
    accession: h("input", { type: "search", name: "accession" }),
    study_date_from: h("input", { type: "date", name: "study_date_from" }),
    study_date_to: h("input", { type: "date", name: "study_date_to" }),
    modality: h("input", { type: "text", name: "modality", size: 6, maxlength: 16 }),
    source_ae: h("input", { type: "text", name: "source_ae", size: 16, maxlength: 16 }),
    status: select(STATES, ""),
  };
  const query = () => Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
  const table = pagedTable({
    caption: "Studies, most recently received first",
    path: "/studies",
    query,
    columns: [
      { label: "Last received", sort: "received", cell: (s) => when(s.last_received_at) },
      { label: "Study", cell: (s) => h("a", { href: `#/studies/${encodeURIComponent(s.study_uid)}` }, s.study_description || s.study_uid) },
      { label: "Patient", sort: "patient", cell: (s) => s.patient_id || "—" },
      { label: "Accession", sort: "accession", cell: (s) => s.accession_number || "—" },
      { label: "Study date", sort: "study_date", cell: (s) => dicomDate(s.study_date) },
      { label: "Calling AE", sort: "calling_ae", cell: (s) => s.calling_ae || "—" },
      { label: "State", sort: "status", cell: (s) => badge(s.status) },
      { label: "Revision", sort: "revision", num: true, cell: (s) => String(s.revision) },
      { label: "Ready because", cell: (s) => s.ready_reason || "—" },
    ],
    empty: "No study matches.",
  });
  const form = h("form", { role: "search", "aria-label": "Search studies", class: "card" },
    h("div", { class: "row" },
      field("Patient ID", inputs.patient_id), field("Accession number", inputs.accession),
      field("Study date from", inputs.study_date_from), field("Study date to", inputs.study_date_to),
      field("Modality", inputs.modality), field("Calling AE", inputs.source_ae), field("State", inputs.status),
      h("button", { type: "submit", class: "primary" }, "Search")));
  form.addEventListener("submit", (event) => { event.preventDefault(); table.reload(); });
  replace(main, h("h1", {}, "Studies"), form, h("div", { class: "card" }, table.element));
  await table.load();
}
