// Signing in: a name and a password; the answer sets the session cookie.

import { call } from "../api.js";
import { field, h, replace } from "../dom.js";

export function signInPage(main, { message, signedIn }) {
  const name = h("input", { type: "text", name: "username", autocomplete: "username", required: true, spellcheck: "false" });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const error = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to the DoctorAI console"),
    message ? h("p", { class: "notice warn" }, message) : null,
    field("Name", name), field("Password", password), submit, error,
    h("p", { class: "muted" }, "Accounts are made with ", h("code", {}, "doctorai users add NAME --role ROLE"), "."));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    replace(error);
    try {
      const session = await call("/console/session", { method: "POST", json: { name: name.value, password: password.value } });
      password.value = "";
      signedIn(session);
    } catch (failure) {
      const text = failure.status === 401
        ? "Sign-in refused: wrong name or password, or the account is locked after too many failures."
        : failure.message;
      replace(error, h("p", { class: "notice bad", role: "alert" }, text));
      password.value = "";
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, form);
  name.focus();
}
