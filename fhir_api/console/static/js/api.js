// Calls to the admin API with the session cookie (sent by the browser) and, on every change, the
// session's CSRF token in the X-CSRF-Token header. Errors are RFC 9457 problem details.

let csrfToken = "";
let signedOut = () => {};

export function useSession(token, onSignedOut) {
  csrfToken = token;
  signedOut = onSignedOut;
}

export class ApiError extends Error {
  constructor(status, detail, errors) {
    super(detail || `the server answered ${status}`);
    this.status = status;
    this.errors = errors || [];
  }
}

function describe(body, status) {
  if (!body || typeof body !== "object") return [`the server answered ${status}`, []];
  const errors = Array.isArray(body.errors) ? body.errors : [];
  const detail = errors.length
    ? errors.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ")
    : body.detail;
  return [detail, errors];
}

export async function call(path, { method = "GET", query = {}, json, body, contentType } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  let payload = body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  } else if (contentType) {
    headers["Content-Type"] = contentType;
  }
  const response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  if (response.status === 401 && !path.startsWith("/console/session")) signedOut();
  if (!response.ok) {
    let parsed = null;
    try { parsed = await response.json(); } catch { parsed = null; }
    const [detail, errors] = describe(parsed, response.status);
    throw new ApiError(response.status, detail, errors);
  }
  return response.status === 204 ? null : response.json();
}

export function admin(path, options) {
  return call(`/admin${path}`, options);
}

// Every item of a list, page after page (for small lists: destinations in a select, and such).
export async function all(path, query = {}) {
  const items = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await admin(path, { query: { ...query, limit: 1000, offset } });
    items.push(...page.items);
    if (items.length >= page.total || page.items.length === 0) return items;
  }
}
