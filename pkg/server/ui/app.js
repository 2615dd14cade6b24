// berth status page: sort a table by a column (click its header) and filter
// the images table (the search box). No dependencies.
(function () {
  "use strict";
  function cellValue(row, i, kind) {
    var c = row.cells[i];
    var v = c.getAttribute("data-value") || c.textContent.trim();
    return kind === "num" ? parseFloat(v) || 0 : v.toLowerCase();
  }
  document.querySelectorAll("table.sortable th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var table = th.closest("table"), body = table.tBodies[0];
      var i = Array.prototype.indexOf.call(th.parentNode.children, th);
      var kind = th.getAttribute("data-sort");
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = cellValue(a, i, kind), y = cellValue(b, i, kind);
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      }).forEach(function (r) { body.appendChild(r); });
    });
  });
  var search = document.getElementById("search");
  if (search) {
    search.addEventListener("input", function () {
      var q = search.value.toLowerCase();
      document.querySelectorAll("#images tbody tr").forEach(function (r) {
        r.hidden = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  }
  document.documentElement.setAttribute("data-ready", "1");
})();
