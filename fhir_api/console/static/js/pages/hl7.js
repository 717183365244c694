// HL7 messages: filter by sender, type, status and date; a message segment by segment, with its
// ACK and the fields the FHIR mapping did not use.

import { admin } from "../api.js";
import { badge, card, facts, field, h, replace, select, when } from "../dom.js";
import { pagedTable, simpleTable } from "../table.js";

function segments(list) {
  const width = Math.max(0, ...list.map((s) => s.fields.length));
  const id = "segments-caption";
  // Wide messages scroll sideways: the region takes focus so a keyboard can scroll it too.
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-labelledby": id }, h("table", { class: "segments", "aria-labelledby": id },
    h("caption", { id }, "Segments as received; field numbers across the top"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Segment"), Array.from({ length: width }, (_, i) => h("th", { scope: "col" }, String(i + 1))))),
    h("tbody", {}, list.map((s) => h("tr", {}, h("th", { scope: "row" }, s.name),
      Array.from({ length: width }, (_, i) => h("td", {}, s.fields[i] ?? "")))))));
}

async function renderMessage(main, id) {
  const m = await admin(`/hl7/messages/${encodeURIComponent(id)}`, { query: { segments: true } });
  replace(main,
    h("p", {}, h("a", { href: "#/hl7" }, "← HL7 messages")),
    h("h1", {}, `${m.message_type}^${m.trigger_event} ${m.control_id}`),
    h("div", { class: "grid" },
      card("Envelope", facts([
        ["Sender (MSH-3^MSH-4)", `${m.sender_application}^${m.sender_facility}`], ["From", m.source_address || "—"],
        ["Control id (MSH-10)", m.control_id], ["Version (MSH-12)", m.version], ["Received", when(m.received_at)],
        ["Size", `${m.size} bytes`], ["Stored as", h("code", {}, m.object_key || "—")],
      ])),
      card("Acknowledgement", facts([
        ["ACK (MSA-1)", badge(m.ack_code)], ["Outcome", badge(m.status)], ["Error", m.error || "—"],
      ]))),
    card("Message", m.segments.length ? segments(m.segments) : h("p", { class: "muted" }, "The raw message is not stored.")),
    card("Fields the FHIR mapping did not use", simpleTable("Unmapped fields", [
      { label: "Field", cell: ([path]) => h("code", {}, path) },
      { label: "Value", cell: ([, value]) => value },
    ], Object.entries(m.unmapped), "Every populated field was used.")));
}

export async function render(main, context, args) {
  if (args[0]) {
    await renderMessage(main, args[0]);
    return;
  }
  const inputs = {
    sender: h("input", { type: "text", placeholder: "MSH-3 or MSH-3^MSH-4" }),
    type: h("input", { type: "text", placeholder: "ADT or ADT^A08", size: 10 }),
    status: select([["", "any"], ["accepted", "accepted"], ["error", "error"], ["rejected", "rejected"]], ""),
    since: h("input", { type: "date" }),
    until: h("input", { type: "date" }),
  };
  const query = () => ({
    sender: inputs.sender.value.trim(),
    type: inputs.type.value.trim(),
    status: inputs.status.value,
    since: inputs.since.value ? new Date(`${inputs.since.value}T00:00:00`).toISOString() : "",
    until: inputs.until.value ? new Date(`${inputs.until.value}T23:59:59.999`).toISOString() : "",
  });
  const list = pagedTable({
    caption: "HL7 messages, newest first",
    path: "/hl7/messages",
    query,
    columns: [
      { label: "Received", sort: "received", cell: (m) => when(m.received_at) },
      { label: "Type", sort: "type", cell: (m) => h("a", { href: `#/hl7/${encodeURIComponent(m.id)}` }, `${m.message_type}^${m.trigger_event}`) },
      { label: "Control id", sort: "control_id", cell: (m) => m.control_id },
      { label: "Sender", sort: "sender", cell: (m) => `${m.sender_application}^${m.sender_facility}` },
      { label: "ACK", cell: (m) => badge(m.ack_code) },
      { label: "Outcome", sort: "status", cell: (m) => badge(m.status) },
      { label: "Unmapped fields", num: true, cell: (m) => String(m.unmapped_fields) },
    ],
    empty: "No message matches.",
  });
  const form = h("form", { class: "card", role: "search", "aria-label": "Filter HL7 messages" },
    h("div", { class: "row" }, field("Sender", inputs.sender), field("Type", inputs.type), field("Outcome", inputs.status),
      field("Received from", inputs.since), field("Received to", inputs.until), h("button", { type: "submit", class: "primary" }, "Filter")));
  form.addEventListener("submit", (event) => { event.preventDefault(); list.reload(); });
  replace(main, h("h1", {}, "HL7 messages"), form, h("div", { class: "card" }, list.element));
  await list.load();
}
