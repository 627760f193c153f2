"use strict";
function robenchSort(th) {
  const table = th.closest("table");
  const col = Array.prototype.indexOf.call(th.parentNode.children, th);
  const dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
  table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
  th.setAttribute("aria-sort", dir);
  const body = table.tBodies[0];
  const rows = Array.prototype.slice.call(body.rows);
  const key = function (row) {
    const cell = row.cells[col];
    const raw = cell.getAttribute("data-value");
    if (raw === null || raw === "") { return null; }
    const num = Number(raw);
    return isNaN(num) ? raw.toLowerCase() : num;
  };
  rows.sort(function (a, b) {
    const ka = key(a), kb = key(b);
    if (ka === kb) { return 0; }
    if (ka === null) { return 1; }
    if (kb === null) { return -1; }
    const less = typeof ka === typeof kb ? ka < kb : typeof ka === "number";
    return (less ? -1 : 1) * (dir === "ascending" ? 1 : -1);
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.addEventListener("click", function () { robenchSort(th); });
    th.title = "click to sort";
  });
});
