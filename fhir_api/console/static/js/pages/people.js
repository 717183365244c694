// Users and API clients (the admin's): people who sign in to this console, and the back-end
// systems that get tokens from /auth/token.

import { admin } from "../api.js";
import { action, badge, card, field, h, replace, select, when } from "../dom.js";
import { pagedTable } from "../table.js";

const ROLES = [["operator", "operator"], ["admin", "admin"], ["auditor", "auditor"]];

function users(me) {
  const list = pagedTable({
    caption: "People who sign in to the console",
    path: "/users",
    columns: [
      { label: "Name", sort: "name", cell: (u) => u.name },
      { label: "Role", sort: "role", cell: (u) => u.role },
      { label: "State", cell: (u) => (u.disabled ? badge("disabled") : u.locked_until && new Date(u.locked_until) > new Date()
        ? badge("locked", `locked until ${when(u.locked_until)}`) : badge("enabled", "active")) },
      { label: "Last sign-in", sort: "last_sign_in", cell: (u) => when(u.last_sign_in_at) },
      { label: "Actions", cell: (u) => (u.name === me.name ? h("span", { class: "muted" }, "you") : h("div", { class: "row" },
        u.locked_until ? action(`Unlock ${u.name}`, async () => { await admin(`/users/${encodeURIComponent(u.name)}/unlock`, { method: "POST" }); await list.load(); return `${u.name} unlocked.`; }) : null,
        action(u.disabled ? `Enable ${u.name}` : `Disable ${u.name}`, async () => {
          await admin(`/users/${encodeURIComponent(u.name)}`, { method: "PUT", json: { disabled: !u.disabled } });
          await list.load();
          return `${u.name} ${u.disabled ? "enabled" : "disabled"}.`;
        }),
        action(`Remove ${u.name}`, async () => { await admin(`/users/${encodeURIComponent(u.name)}`, { method: "DELETE" }); await list.load(); return `${u.name} removed.`; },
          { kind: "danger", confirm: `Remove ${u.name}'s account?` }))) },
    ],
  });
  const name = h("input", { type: "text", autocomplete: "off" });
  const role = select(ROLES, "operator");
  const password = h("input", { type: "password", autocomplete: "new-password" });
  const add = action("Add person", async () => {
    await admin("/users", { method: "POST", json: { name: name.value.trim(), role: role.value, password: password.value } });
    password.value = "";
    await list.load();
    return `${name.value.trim()} added.`;
  }, { kind: "primary" });
  return [card("Users", list.element, h("h3", {}, "Add a person"),
    h("div", { class: "row" }, field("Name", name), field("Role", role), field("Password", password, { hint: "at least 12 characters" }), add)), list];
}

function clients() {
  const list = pagedTable({
    caption: "API clients (SMART Backend Services)",
    path: "/clients",
    columns: [
      { label: "Client id", sort: "client_id", cell: (c) => c.client_id },
      { label: "Name", sort: "name", cell: (c) => c.name || "—" },
      { label: "Scopes", cell: (c) => c.scopes.join(" ") },
      { label: "Authenticates with", sort: "auth_method", cell: (c) => c.auth_method },
      { label: "State", sort: "enabled", cell: (c) => badge(c.enabled ? "enabled" : "disabled") },
      { label: "Actions", cell: (c) => (c.enabled ? action(`Disable ${c.client_id}`, async () => {
        await admin(`/clients/${encodeURIComponent(c.client_id)}/disable`, { method: "POST" });
        await list.load();
        return `${c.client_id} disabled.`;
      }, { kind: "danger", confirm: `Refuse ${c.client_id}'s token requests from now on?` }) : "—") },
    ],
  });
  const id = h("input", { type: "text" });
  const name = h("input", { type: "text" });
  const scopes = h("input", { type: "text", value: "system/DiagnosticReport.rs" });
  const key = h("textarea", { rows: 4, placeholder: "-----BEGIN PUBLIC KEY-----" });
  const secret = h("div", { "aria-live": "polite" });
  const add = action("Register client", async () => {
    const created = await admin("/clients", { method: "POST", json: {
      client_id: id.value.trim(), name: name.value.trim(), scopes: scopes.value.trim().split(/\s+/), public_key: key.value.trim(),
    } });
    replace(secret, created.client_secret
      ? h("p", { class: "notice warn" }, "Its secret, shown this once: ", h("code", {}, created.client_secret))
      : h("p", { class: "notice ok" }, `${created.client_id} authenticates with its key.`));
    await list.load();
    return `${created.client_id} registered.`;
  }, { kind: "primary" });
  return [card("API clients", list.element, h("h3", {}, "Register a client"),
    h("div", { class: "row" }, field("Client id", id), field("Name", name), field("Scopes (space-separated)", scopes, { wide: true })),
    field("Public key (PEM); none: it gets a secret", key, { wide: true }), add, secret), list];
}

export async function render(main, context) {
  const [userCard, userList] = users(context.me);
  const [clientCard, clientList] = clients();
  replace(main, h("h1", {}, "Users and API clients"), userCard, clientCard);
  await Promise.all([userList.load(), clientList.load()]);
}
