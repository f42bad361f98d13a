// The Traffic page's live rows: one EventSource on /admin/traffic/stream with the page's filters.
// Rows are built with textContent only (never innerHTML): audit text is data, whoever wrote it.
"use strict";
(function () {
  const table = document.querySelector("#traffic tbody");
  const status = document.getElementById("live");
  const source = new EventSource(table.dataset.stream);
  const columns = ["time", "kind", "persona", "principal", "server", "name", "outcome", "latency", "error"];
  source.addEventListener("row", function (event) {
    const received = Date.now();
    const row = JSON.parse(event.data);
    const tr = document.createElement("tr");
    tr.dataset.id = row.id;
    tr.dataset.requestId = row.request_id || "";
    tr.dataset.ended = String(row.ended_ms);
    tr.dataset.received = String(received);
    tr.className = "live";
    for (const column of columns) {
      const td = document.createElement("td");
      if (column === "name" && row.request_id) {
        const a = document.createElement("a");
        a.href = table.dataset.detail + encodeURIComponent(row.request_id);
        a.textContent = row.name || row.method || "(detail)";
        td.appendChild(a);
      } else if (column === "outcome") {
        const span = document.createElement("span");
        span.className = row.outcome || "";
        span.textContent = row.outcome || "";
        td.appendChild(span);
      } else {
        td.textContent = row[column] == null ? "" : String(row[column]);
      }
      tr.appendChild(td);
    }
    table.insertBefore(tr, table.firstChild);
    while (table.rows.length > 500) table.deleteRow(table.rows.length - 1);
  });
  source.addEventListener("problem", function (event) {
    const problem = JSON.parse(event.data);
    status.textContent = problem || "live"; status.className = problem ? "warning" : "ok";
  });
  source.addEventListener("open", function () { status.textContent = "live"; status.className = "ok"; });
  source.addEventListener("error", function () { status.textContent = "reconnecting"; status.className = "warning"; });
})();
