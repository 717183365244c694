// Destinations and peers: where studies and results go (with an echo button, queue depth and
// circuit state), and the DICOM peers allowed to send to the listener.

import { admin } from "../api.js";
import { action, announce, badge, card, check, field, h, replace, select } from "../dom.js";
import { pagedTable } from "../table.js";

// The options each kind takes (fhir_api/admin/routes/destinations.py), as form fields.
const OPTIONS = {
  dicom: [["ae_title", "Called AE title"], ["calling_ae", "Our AE title towards it"]],
  mllp: [["application_acks_for", "Application ACKs for (MSH-3^MSH-4)"]],
  fhir: [["base_url", "FHIR base URL"], ["auth", "Authentication (none, bearer, basic)"], ["token", "Bearer token"]],
  webhook: [["url", "URL"], ["secret", "HMAC secret"]],
};

function address(d) {
  if (d.kind === "fhir") return d.options.base_url || "—";
  if (d.kind === "webhook") return d.options.url || "—";
  return `${d.host}:${d.port}${d.tls ? " (TLS)" : ""}${d.options.ae_title ? ` AE ${d.options.ae_title}` : ""}`;
}

function destinationForm(list, chosen) {
  const kind = select(Object.keys(OPTIONS).map((k) => [k, k]), chosen?.kind || "dicom");
  const name = h("input", { type: "text", value: chosen?.name || "", required: true });
  const host = h("input", { type: "text", value: chosen?.host || "" });
  const port = h("input", { type: "number", min: 1, max: 65535, value: chosen?.port || 104 });
  const tls = h("input", { type: "checkbox", checked: Boolean(chosen?.tls) });
  const options = h("div", { class: "row" });
  const inputs = {};
  function drawOptions() {
    const fields = OPTIONS[kind.value].map(([key, label]) => {
      inputs[key] = h("input", { type: "text", value: chosen?.kind === kind.value ? chosen.options[key] || "" : "" });
      return field(label, inputs[key]);
    });
    for (const key of Object.keys(inputs)) if (!OPTIONS[kind.value].some(([k]) => k === key)) delete inputs[key];
    replace(options, fields);
    host.disabled = port.disabled = tls.disabled = ["fhir", "webhook"].includes(kind.value);
  }
  kind.addEventListener("change", drawOptions);
  drawOptions();
  const save = action(chosen ? "Save destination" : "Add destination", async () => {
    const body = { name: name.value.trim(), kind: kind.value, options: {} };
    for (const [key, input] of Object.entries(inputs)) if (input.value.trim()) body.options[key] = input.value.trim();
    if (["dicom", "mllp"].includes(kind.value)) Object.assign(body, { host: host.value.trim(), port: Number(port.value), tls: tls.checked });
    if (chosen) body.enabled = chosen.enabled;
    const saved = chosen
      ? await admin(`/destinations/${chosen.id}`, { method: "PUT", json: body })
      : await admin("/destinations", { method: "POST", json: body });
    await list.load();
    return `Destination ${saved.name} saved.`;
  }, { kind: "primary" });
  return card(chosen ? `Edit ${chosen.name}` : "Add a destination",
    h("div", { class: "row" }, field("Kind", kind), field("Name", name), field("Host", host), field("Port", port), check("TLS", tls)),
    options, save);
}

function destinations(context, slot) {
  const canChange = context.can("destinations");
  const echoed = new Map();
  const list = pagedTable({
    caption: "Destinations",
    path: "/destinations",
    columns: [
      { label: "Name", sort: "name", cell: (d) => d.name },
      { label: "Kind", sort: "kind", cell: (d) => d.kind },
      { label: "Address", cell: address },
      { label: "State", sort: "enabled", cell: (d) => badge(d.enabled ? "enabled" : "disabled") },
      { label: "Pending", sort: "pending", num: true, cell: (d) => String(d.pending) },
      { label: "Dead", sort: "dead", num: true, cell: (d) => (d.dead ? badge("dead", String(d.dead)) : "0") },
      { label: "Circuit", cell: (d) => (d.circuit_open ? badge("bad", "open") : badge("ok", "closed")) },
      ...(canChange ? [{ label: "Actions", cell: (d) => {
        const answer = h("span", { "aria-live": "polite" }, echoed.get(d.id) || "");
        return h("div", { class: "row" },
          action(`Echo ${d.name}`, async () => {
            const result = await admin(`/destinations/${d.id}/echo`, { method: "POST" });
            const text = `${result.ok ? "Answered" : "No answer"}: ${result.detail} (${result.seconds.toFixed(2)} s)`;
            echoed.set(d.id, text);
            replace(answer, badge(result.ok ? "ok" : "failed", result.ok ? "echo ok" : "echo failed"), " ", text);
            return text;
          }),
          h("button", { type: "button", onclick: () => { replace(slot, destinationForm(list, d)); slot.querySelector("select").focus(); } }, `Edit ${d.name}`),
          action(d.enabled ? `Disable ${d.name}` : `Enable ${d.name}`, async () => {
            await admin(`/destinations/${d.id}/${d.enabled ? "disable" : "enable"}`, { method: "POST" });
            await list.load();
            return `${d.name} ${d.enabled ? "disabled" : "enabled"}.`;
          }),
          answer);
      } }] : []),
    ],
  });
  return list;
}

function peers(context) {
  const canChange = context.can("peers");
  const list = pagedTable({
    caption: "DICOM peers allowed to send",
    path: "/peers",
    columns: [
      { label: "AE title", sort: "ae_title", cell: (p) => p.ae_title },
      { label: "Host", sort: "host", cell: (p) => p.host || "any" },
      { label: "Quiet period", num: true, cell: (p) => (p.quiet_period_seconds ?? "default").toString() },
      { label: "Associations", num: true, cell: (p) => (p.max_associations ?? "default").toString() },
      { label: "Duplicates", cell: (p) => p.duplicate_policy || "default" },
      ...(canChange ? [{ label: "Remove", cell: (p) => action(`Remove ${p.ae_title}`, async () => {
        await admin(`/peers/${encodeURIComponent(p.ae_title)}`, { method: "DELETE" });
        await list.load();
        return `${p.ae_title} removed.`;
      }, { kind: "danger", confirm: `Stop accepting associations from ${p.ae_title}?` }) }] : []),
    ],
    empty: "No peer is listed: any calling AE may send unless the listener allows only listed ones.",
  });
  if (!canChange) return { list, form: null };
  const ae = h("input", { type: "text", maxlength: 16, required: true });
  const host = h("input", { type: "text" });
  const quiet = h("input", { type: "number", min: 0, step: "any" });
  const duplicates = select([["", "default"], ["keep-first", "keep-first"], ["keep-last", "keep-last"], ["reject", "reject"]], "");
  const save = action("Save peer", async () => {
    const body = { host: host.value.trim(), quiet_period_seconds: quiet.value ? Number(quiet.value) : null, duplicate_policy: duplicates.value || null };
    await admin(`/peers/${encodeURIComponent(ae.value.trim())}`, { method: "PUT", json: body });
    await list.load();
    return `Peer ${ae.value.trim()} saved.`;
  }, { kind: "primary" });
  const form = h("div", { class: "row" }, field("AE title", ae), field("Only from host", host), field("Quiet period (s)", quiet), field("Duplicates", duplicates), save);
  return { list, form };
}

export async function render(main, context) {
  const slot = h("div");
  const list = destinations(context, slot);
  const peer = peers(context);
  replace(main, h("h1", {}, "Destinations and peers"),
    h("div", { class: "card" }, list.element,
      context.can("destinations") ? h("button", { type: "button", class: "primary", onclick: () => { replace(slot, destinationForm(list, null)); slot.querySelector("select").focus(); } }, "Add a destination") : null),
    slot,
    card("Peers", peer.list.element, peer.form));
  await Promise.all([list.load(), peer.list.load()]);
  announce("Destinations shown");
}
