// Building the page: elements, formatting, and messages read out by screen readers.

export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "path", "line", "rect", "text", "title", "desc", "polyline", "circle"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", value);
    else if (key === "text") el.textContent = value;
    else if (key in el && !svg && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let ids = 0;
export function uid(prefix = "id") {
  ids += 1;
  return `${prefix}-${ids}`;
}

export function announce(message) {
  const status = document.getElementById("status");
  status.textContent = "";
  window.setTimeout(() => { status.textContent = message; }, 50);
}

const two = (n) => String(n).padStart(2, "0");

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  return `${(value / 60).toFixed(1)} min`;
}

export function dicomDate(da) {
  return da && da.length === 8 ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}` : da || "—";
}

const STATES = {
  ok: ["ready", "done", "sent", "accepted", "active", "replayed", "running", "AA", "CA", "intact", "enabled"],
  warn: ["receiving", "held", "queued", "pending", "inactive", "open", "locked", "AE", "CE"],
  bad: ["failed", "dead", "error", "rejected", "dropped", "retired", "discarded", "not beating", "broken", "disabled", "AR", "CR"],
};

export function badge(state, label) {
  const kind = state in STATES ? state : Object.keys(STATES).find((k) => STATES[k].includes(state)) || "info";
  return h("span", { class: `badge ${kind}` }, label || state || "—");
}

export function field(label, control, { wide = false, hint } = {}) {
  const id = control.id || uid("f");
  control.id = id;
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) control.setAttribute("aria-describedby", [control.getAttribute("aria-describedby"), hintId].filter(Boolean).join(" "));
  return h("div", { class: wide ? "field wide" : "field" },
    h("label", { for: id }, label), control, hint ? h("small", { id: hintId, class: "muted" }, hint) : null);
}

export function check(label, control) {
  control.id = control.id || uid("c");
  return h("label", { class: "check", for: control.id }, control, label);
}

export function select(options, value) {
  return h("select", {}, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}

export function card(title, ...children) {
  const id = uid("h");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), children);
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

export function problem(error) {
  const box = h("div", { class: "notice bad", role: "alert" }, error.message || String(error));
  return box;
}

export function notice(kind, text) {
  return h("div", { class: `notice ${kind}`, role: kind === "bad" ? "alert" : "status" }, text);
}

// A button that runs an action, says what happened, and shows a failure beside itself.
export function action(label, run, { kind = "", confirm: question } = {}) {
  const button = h("button", { type: "button", class: kind }, label);
  button.addEventListener("click", async () => {
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    button.nextElementSibling?.classList.contains("notice") && button.nextElementSibling.remove();
    try {
      const message = await run();
      if (message) announce(message);
    } catch (error) {
      button.after(problem(error));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
