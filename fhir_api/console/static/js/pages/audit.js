// Audit (the auditor's): search the trail by date, agent, subtype, entity and patient, and walk
// the hash chain to see whether it is intact. Every search and walk is itself audited.

import { admin } from "../api.js";
import { action, badge, card, facts, field, h, replace, when } from "../dom.js";
import { pagedTable } from "../table.js";

export async function render(main) {
  const inputs = {
    from: h("input", { type: "date" }),
    to: h("input", { type: "date" }),
    agent: h("input", { type: "text", placeholder: "a person, a client id, ae:CT1" }),
    subtype: h("input", { type: "text", placeholder: "user-signed-in, resource-read, ..." }),
    entity: h("input", { type: "text", placeholder: "DiagnosticReport/123" }),
    patient: h("input", { type: "text", placeholder: "Patient/123" }),
  };
  const query = () => {
    const q = {};
    if (inputs.from.value && inputs.to.value) q.date = `ge${inputs.from.value},le${inputs.to.value}`;
    else if (inputs.from.value) q.date = `ge${inputs.from.value}`;
    else if (inputs.to.value) q.date = `le${inputs.to.value}`;
    for (const key of ["agent", "subtype", "entity", "patient"]) if (inputs[key].value.trim()) q[key] = inputs[key].value.trim();
    return q;
  };
  const list = pagedTable({
    caption: "Audit records, newest first",
    path: "/audit",
    query,
    limit: 50,
    columns: [
      { label: "Number", sort: "id", num: true, cell: (r) => String(r.id) },
      { label: "Recorded", sort: "recorded", cell: (r) => when(r.recorded_at) },
      { label: "Event", sort: "subtype", cell: (r) => `${r.subtype} (DCM ${r.type_code})` },
      { label: "Outcome", cell: (r) => badge(r.outcome === "0" ? "ok" : "bad", r.outcome === "0" ? "success" : `failure ${r.outcome}`) },
      { label: "Who", cell: (r) => `${r.agent_who}${r.agent_address ? ` from ${r.agent_address}` : ""}` },
      { label: "What", cell: (r) => r.entity_what || "—" },
      { label: "Detail", cell: (r) => Object.entries(r.detail).map(([k, v]) => `${k}=${v}`).join(" ").slice(0, 240) },
    ],
    empty: "No record matches.",
  });
  const chain = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Not checked in this visit."));
  const verify = action("Verify the chain now", async () => {
    const state = await admin("/audit/verification");
    replace(chain, facts([
      ["Checked", when(state.checked_at)],
      ["Records", String(state.records)],
      ["State", badge(state.intact ? "intact" : "broken")],
      ["First break", state.broken_at ? `record ${state.broken_at}: ${state.reason}` : "none"],
    ]));
    return state.intact ? `The chain of ${state.records} records is intact.` : `The chain breaks at record ${state.broken_at}.`;
  }, { kind: "primary" });
  const form = h("form", { class: "card", role: "search", "aria-label": "Search the audit trail" },
    h("div", { class: "row" }, field("From", inputs.from), field("To", inputs.to), field("Agent", inputs.agent),
      field("Event", inputs.subtype), field("Entity", inputs.entity), field("Patient", inputs.patient),
      h("button", { type: "submit", class: "primary" }, "Search")));
  form.addEventListener("submit", (event) => { event.preventDefault(); list.reload(); });
  replace(main, h("h1", {}, "Audit trail"),
    card("Chain verification", h("p", { class: "muted" }, "Each record holds the hash of the one before it; a walk finds the first record changed, removed or reordered."), verify, chain),
    form, h("div", { class: "card" }, list.element));
  await list.load();
}
