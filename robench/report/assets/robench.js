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
// Filter: rows of every table whose text does not contain each of the typed words are hidden.
function robenchFilter(text) {
  const words = text.toLowerCase().split(/\s+/).filter(function (w) { return w.length > 0; });
  document.querySelectorAll("table.sortable tbody tr").forEach(function (row) {
    const hay = row.innerText.toLowerCase();
    const keep = words.every(function (w) { return hay.indexOf(w) >= 0; });
    row.classList.toggle("hidden", !keep);
  });
}
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.addEventListener("click", function () { robenchSort(th); });
    th.title = "click to sort";
  });
  const box = document.getElementById("filter");
  if (box) {
    box.addEventListener("input", function () { robenchFilter(box.value); });
    if (box.value) { robenchFilter(box.value); }
  }
});
