// Dead letters: list them, inspect one (its payload; the read is audited), replay one or many
// onto their topic, or discard one with a reason.

import { admin } from "../api.js";
import { action, announce, badge, card, facts, field, h, replace, select, when } from "../dom.js";
import { pagedTable } from "../table.js";

function discardDialog(letter, done) {
  const reason = h("textarea", { required: true, rows: 3 });
  const error = h("div");
  const dialog = h("dialog", { "aria-labelledby": "discard-title" },
    h("h2", { id: "discard-title" }, `Discard dead letter ${letter.id}`),
    field("Why is it discarded?", reason, { wide: true }), error,
    h("div", { class: "row" },
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!reason.value.trim()) { replace(error, h("p", { class: "notice bad", role: "alert" }, "Give a reason.")); return; }
        try {
          await admin(`/dead-letters/${letter.id}/discard`, { method: "POST", json: { reason: reason.value.trim() } });
          dialog.close();
          await done(`Dead letter ${letter.id} discarded.`);
        } catch (failure) {
          replace(error, h("p", { class: "notice bad", role: "alert" }, failure.message));
        }
      } }, "Discard"),
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  reason.focus();
}

export async function render(main, context) {
  const status = select([["open", "open"], ["", "any"], ["replayed", "replayed"], ["discarded", "discarded"]], "open");
  const inspected = h("div");
  const canChange = context.can("dead-letters");
  async function done(message) {
    await list.load();
    announce(message);
  }
  const list = pagedTable({
    caption: "Dead letters, newest first",
    path: "/dead-letters",
    query: () => ({ status: status.value }),
    select: canChange ? { key: (l) => l.id, label: (l) => `dead letter ${l.id}` } : undefined,
    columns: [
      { label: "Number", sort: "id", num: true, cell: (l) => String(l.id) },
      { label: "Failed at", sort: "created", cell: (l) => when(l.created_at) },
      { label: "Topic", sort: "topic", cell: (l) => l.source_topic },
      { label: "Error", cell: (l) => l.error.slice(0, 160) },
      { label: "State", sort: "status", cell: (l) => badge(l.status) },
      { label: "Actions", cell: (l) => h("div", { class: "row" },
        h("button", { type: "button", onclick: () => inspect(l.id) }, `Inspect ${l.id}`),
        canChange && l.status === "open" ? h("button", { type: "button", class: "danger", onclick: () => discardDialog(l, done) }, `Discard ${l.id}`) : null) },
    ],
    empty: "No dead letter.",
  });
  async function inspect(id) {
    const letter = await admin(`/dead-letters/${id}`);
    let payload = letter.payload;
    try { payload = JSON.stringify(JSON.parse(letter.payload), null, 2); } catch { /* not JSON: as it is */ }
    replace(inspected, card(`Dead letter ${letter.id}`,
      facts([["Topic", letter.source_topic], ["Key", letter.key || "—"], ["Correlation id", letter.correlation_id],
        ["Failed at", when(letter.created_at)], ["State", badge(letter.status)], ["Resolved by", letter.resolved_by || "—"],
        ["Reason", letter.reason || "—"], ["Error", letter.error]]),
      h("h3", {}, "Payload, as it was on its topic"), h("pre", { tabindex: "0" }, payload)));
    inspected.querySelector("h2").setAttribute("tabindex", "-1");
    inspected.querySelector("h2").focus();
  }
  const replay = canChange ? action("Replay the selected letters", async () => {
    const ids = list.selected();
    if (!ids.length) throw new Error("Select letters to replay first.");
    await admin("/dead-letters/replay", { method: "POST", json: { ids } });
    await list.load();
    return `${ids.length} dead letter(s) replayed onto their topics.`;
  }, { kind: "primary" }) : null;
  const filter = h("form", { class: "row", role: "search", "aria-label": "Filter dead letters" }, field("State", status), h("button", { type: "submit" }, "Show"));
  filter.addEventListener("submit", (event) => { event.preventDefault(); list.reload(); });
  replace(main, h("h1", {}, "Dead letters"),
    h("p", { class: "muted" }, "Messages a consumer gave up on. A replay puts the message back on its topic; a discard closes it with a reason."),
    h("div", { class: "card" }, filter, list.element, replay), inspected);
  await list.load();
}
