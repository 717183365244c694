// A table of one admin API list: pages and sorts on the server (limit, offset, sort), and says
// where it is ("21–40 of 312") to screen readers too.

import { admin } from "./api.js";
import { h, problem, replace, uid } from "./dom.js";

// columns: [{ label, sort?: "server column", num?: bool, cell: (item) => node or text }]
export function pagedTable({ caption, path, columns, query = () => ({}), limit = 25, sort = "", empty = "Nothing to show.", select }) {
  const captionId = uid("cap");
  const state = { offset: 0, sort, total: 0 };
  const selected = new Set();
  const body = h("tbody");
  const info = h("span", { class: "muted", "aria-live": "polite" });
  const previous = h("button", { type: "button" }, "Previous page");
  const next = h("button", { type: "button" }, "Next page");
  const error = h("div");
  const heads = columns.map((column) => {
    const th = h("th", { scope: "col", class: column.num ? "num" : "" });
    if (column.sort) {
      th.append(h("button", { type: "button", class: "sort", onclick: () => toggle(column.sort) }, column.label));
    } else {
      th.append(column.label);
    }
    return th;
  });
  const selectHead = select ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Select")) : null;
  const table = h("table", { "aria-labelledby": captionId },
    h("caption", { id: captionId }, caption),
    h("thead", {}, h("tr", {}, selectHead, heads)), body);
  const element = h("div", {}, h("div", { class: "table-wrap" }, table), h("div", { class: "pager" }, previous, next, info), error);

  function toggle(column) {
    state.sort = state.sort === column ? `-${column}` : column;
    state.offset = 0;
    load();
  }

  function markSorted() {
    columns.forEach((column, i) => {
      if (!column.sort) return;
      const value = state.sort === column.sort ? "ascending" : state.sort === `-${column.sort}` ? "descending" : null;
      if (value) heads[i].setAttribute("aria-sort", value);
      else heads[i].removeAttribute("aria-sort");
    });
  }

  async function load() {
    replace(error);
    let page;
    try {
      page = await admin(path, { query: { ...query(), limit, offset: state.offset, sort: state.sort } });
    } catch (failure) {
      replace(error, problem(failure));
      return;
    }
    state.total = page.total;
    selected.clear();
    const rows = page.items.map((item) => h("tr", {},
      select ? h("td", {}, h("input", {
        type: "checkbox", "aria-label": `Select ${select.label(item)}`,
        onchange: (event) => { if (event.target.checked) selected.add(select.key(item)); else selected.delete(select.key(item)); },
      })) : null,
      columns.map((column) => h("td", { class: column.num ? "num" : column.class || "" }, column.cell(item)))));
    replace(body, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length + (select ? 1 : 0), class: "muted" }, empty)));
    const last = Math.min(state.offset + page.items.length, page.total);
    info.textContent = page.total ? `${state.offset + 1}–${last} of ${page.total}` : "0 of 0";
    previous.disabled = state.offset === 0;
    next.disabled = last >= page.total;
    markSorted();
  }

  previous.addEventListener("click", () => { state.offset = Math.max(0, state.offset - limit); load(); });
  next.addEventListener("click", () => { state.offset += limit; load(); });
  return { element, load, reload: () => { state.offset = 0; return load(); }, selected: () => [...selected] };
}

// A table of items already in hand (a study's series, a model's versions).
// A caption that only repeats its card's heading is read out, not shown (`quiet`).
export function simpleTable(caption, columns, items, empty = "None.", { quiet = false } = {}) {
  const id = uid("cap");
  return h("div", { class: "table-wrap" }, h("table", { "aria-labelledby": id },
    h("caption", { id, class: quiet ? "visually-hidden" : "" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : "" }, c.label)))),
    h("tbody", {}, items.length
      ? items.map((item) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.cell(item)))))
      : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty)))));
}
