// Rules: the ordered list, an editor that the API validates as one types, and a dry run of the
// rule being edited against a stored study, showing exactly what would happen.

import { admin } from "../api.js";
import { action, announce, badge, card, field, h, replace } from "../dom.js";
import { pagedTable } from "../table.js";

const EXAMPLE = { name: "new-rule", priority: 100, enabled: true, match: { modalities: ["CR"] }, run: [{ model: "chest-xray-pneumonia" }] };

function summary(rule) {
  const parts = [];
  if (rule.run?.length) parts.push(`run ${rule.run.map((r) => r.model).join(", ")}`);
  if (rule.forward?.length) parts.push(`forward to ${rule.forward.join(", ")}`);
  if (rule.hold) parts.push("hold");
  if (rule.drop) parts.push("drop");
  return parts.join("; ");
}

function plan(result) {
  const items = [];
  if (result.dropped_by) items.push(h("li", {}, `Dropped by ${result.dropped_by}: nothing else happens.`));
  if (result.held_by) items.push(h("li", {}, `Held by ${result.held_by} until someone releases it; then:`));
  for (const run of result.runs) items.push(h("li", {}, `Run ${run.model} on ${run.instance_count} instance(s) of ${run.series_uids.length} series (${run.rule}).`));
  for (const f of result.forwards) items.push(h("li", {}, `Forward ${f.instance_count} instance(s) to ${f.destination} (${f.rule}).`));
  if (!items.length) items.push(h("li", {}, "Nothing: the rule does not match this study."));
  return h("div", { class: "notice ok", role: "status" }, h("strong", {}, `Dry run on ${result.study_uid}`), h("ul", {}, items),
    h("p", {}, `Rules that matched: ${result.matched.join(", ") || "none"}.`));
}

function editor(context, list, chosen) {
  const text = h("textarea", { spellcheck: "false", "aria-describedby": "rule-check" }, JSON.stringify(chosen?.rule || EXAMPLE, null, 2));
  const check = h("div", { id: "rule-check", "aria-live": "polite" });
  const studyUid = h("input", { type: "text", size: 50, placeholder: "1.2.840...", list: "recent-studies" });
  const recent = h("datalist", { id: "recent-studies" });
  admin("/studies", { query: { limit: 20 } }).then((page) => replace(recent, page.items.map((s) => h("option", { value: s.study_uid }, s.study_description || s.study_uid))));
  const outcome = h("div");
  let timer = null;

  function parsed() {
    return JSON.parse(text.value);
  }

  async function validate() {
    let body;
    try { body = parsed(); } catch (error) {
      replace(check, h("p", { class: "notice bad" }, `Not JSON yet: ${error.message}`));
      return false;
    }
    const answer = await admin("/rules/validate", { method: "POST", json: body });
    replace(check, answer.valid
      ? h("p", { class: "notice ok" }, "The rule is valid.")
      : h("div", { class: "notice bad" }, "The rule is not valid:",
        h("ul", { class: "errors" }, answer.errors.map((e) => h("li", {}, `${e.loc.join(".") || "rule"}: ${e.msg}`)))));
    return answer.valid;
  }

  text.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => validate().catch(() => {}), 300);
  });
  const save = action(chosen ? "Save changes" : "Save as a new rule", async () => {
    if (!(await validate())) throw new Error("Fix the rule first.");
    const saved = chosen
      ? await admin(`/rules/${chosen.id}`, { method: "PUT", json: parsed() })
      : await admin("/rules", { method: "POST", json: parsed() });
    await list.load();
    return `Rule ${saved.name} saved.`;
  }, { kind: "primary" });
  const remove = chosen ? action("Delete this rule", async () => {
    await admin(`/rules/${chosen.id}`, { method: "DELETE" });
    await list.load();
    return "Rule deleted.";
  }, { kind: "danger", confirm: `Delete rule ${chosen.rule.name}?` }) : null;
  const dry = action("Dry run", async () => {
    const result = await admin("/rules/dry-run", { method: "POST", json: { study_uid: studyUid.value.trim(), rule: parsed() } });
    replace(outcome, plan(result));
    return "Dry run done.";
  });
  validate().catch(() => {});
  return card(chosen ? `Edit rule ${chosen.rule.name}` : "New rule",
    field("Rule (JSON)", text, { wide: true, hint: "name, priority (lower first), enabled, trigger, match, and the actions run, forward, hold or drop" }),
    check, h("div", { class: "row" }, save, remove),
    h("h3", {}, "Dry run against a stored study"),
    h("div", { class: "row" }, field("Study Instance UID", studyUid, { wide: true }), recent, dry), outcome);
}

export async function render(main, context) {
  const slot = h("div");
  const canEdit = context.can("rules");
  const list = pagedTable({
    caption: "Rules in evaluation order (priority, then name)",
    path: "/rules",
    columns: [
      { label: "Priority", sort: "priority", num: true, cell: (r) => String(r.priority) },
      { label: "Name", sort: "name", cell: (r) => r.name },
      { label: "Enabled", sort: "enabled", cell: (r) => badge(r.enabled ? "enabled" : "disabled") },
      { label: "Trigger", cell: (r) => r.trigger },
      { label: "Actions", cell: summary },
      { label: canEdit ? "Edit" : "Definition", cell: (r) => h("button", { type: "button", class: "link",
        onclick: () => { show({ id: r.id, rule: strip(r) }); } }, canEdit ? `Edit ${r.name}` : `Show ${r.name}`) },
    ],
  });
  const warnings = await admin("/rules/warnings");
  function strip(rule) {
    const { id, ...definition } = rule;
    void id;
    return definition;
  }
  function show(chosen) {
    if (canEdit) replace(slot, editor(context, list, chosen));
    else replace(slot, card(`Rule ${chosen.rule.name}`, h("pre", {}, JSON.stringify(chosen.rule, null, 2))));
    slot.querySelector("textarea, pre")?.focus?.();
    announce(`Rule ${chosen.rule.name} shown`);
  }
  replace(main, h("h1", {}, "Rules"),
    warnings.items.length ? h("div", { class: "notice warn", role: "status" }, h("strong", {}, "Rules that cannot run: "),
      warnings.items.map((w) => `${w.rule} runs ${w.model} (${w.problem})`).join("; ")) : null,
    h("div", { class: "card" }, list.element,
      canEdit ? h("button", { type: "button", class: "primary", onclick: () => { replace(slot, editor(context, list, null)); slot.querySelector("textarea").focus(); } }, "New rule") : null),
    slot);
  await list.load();
}
