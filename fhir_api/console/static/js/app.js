// The console: who is signed in, the sections their role may see, and a page per hash route
// (#/studies/1.2.3 -> pages/studies.js with ["1.2.3"]). Every page reads the admin API.

import { ApiError, call, useSession } from "./api.js";
import { announce, h, replace } from "./dom.js";
import { signInPage } from "./pages/signin.js";

// Sections, and the admin API area whose read the role table must allow for each to show.
const SECTIONS = [
  { route: "overview", label: "Overview", area: "overview", page: () => import("./pages/overview.js") },
  { route: "studies", label: "Studies", area: "studies", page: () => import("./pages/studies.js") },
  { route: "rules", label: "Rules", area: "rules", page: () => import("./pages/rules.js") },
  { route: "destinations", label: "Destinations and peers", area: "destinations", page: () => import("./pages/destinations.js") },
  { route: "models", label: "Models", area: "models", page: () => import("./pages/models.js") },
  { route: "dead-letters", label: "Dead letters", area: "dead-letters", page: () => import("./pages/dead_letters.js") },
  { route: "hl7", label: "HL7 messages", area: "hl7", page: () => import("./pages/hl7.js") },
  { route: "audit", label: "Audit", area: "audit", page: () => import("./pages/audit.js") },
  { route: "people", label: "Users and API clients", area: "users", page: () => import("./pages/people.js") },
];

const main = document.getElementById("main");
let me = null;
let leave = null; // what the current page stops when another one is shown (its refresh timer)

function visible() {
  return SECTIONS.filter((s) => me.reads.includes(s.area));
}

function drawChrome() {
  const nav = document.getElementById("nav");
  replace(nav, h("ul", {}, visible().map((s) => h("li", {}, h("a", { href: `#/${s.route}`, "data-route": s.route }, s.label)))));
  replace(document.getElementById("who"),
    h("span", {}, me.name), h("span", { class: "role" }, me.role),
    h("button", { type: "button", onclick: signOut }, "Sign out"));
}

function clearChrome() {
  replace(document.getElementById("nav"));
  replace(document.getElementById("who"));
}

async function signOut() {
  try { await call("/console/session", { method: "DELETE" }); } catch { /* ended already */ }
  signedOut("You are signed out.");
}

function signedOut(message = "Your session has ended; sign in again.") {
  me = null;
  if (leave) leave();
  leave = null;
  clearChrome();
  document.title = "Sign in · DoctorAI console";
  signInPage(main, { message, signedIn: start });
}

function start(session) {
  me = session;
  useSession(me.csrf_token, () => signedOut());
  drawChrome();
  if (!window.location.hash || window.location.hash === "#/") window.location.hash = `#/${visible()[0]?.route || "overview"}`;
  else show();
}

async function show() {
  if (!me) return;
  const [route, ...args] = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const section = visible().find((s) => s.route === route) || visible()[0];
  if (!section) {
    replace(main, h("h1", {}, "Nothing to show"), h("p", {}, "Your role gives you no section of the console."));
    return;
  }
  document.querySelectorAll("#nav a").forEach((a) => {
    if (a.dataset.route === section.route) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (leave) leave();
  leave = null;
  const context = {
    me,
    can: (area) => me.changes.includes(area),
    go: (hash) => { window.location.hash = hash; },
    onLeave: (stop) => { leave = stop; },
  };
  replace(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const module = await section.page();
    await module.render(main, context, args);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    replace(main, h("h1", {}, section.label), h("div", { class: "notice bad", role: "alert" }, error.message || String(error)));
  }
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : section.label} · DoctorAI console`;
  main.focus();
  announce(`${heading ? heading.textContent : section.label} shown`);
}

window.addEventListener("hashchange", show);

try {
  start(await call("/console/session"));
} catch {
  signedOut("");
}
