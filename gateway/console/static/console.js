// The console's only script: follows a running integrity check. Everything else works without it.
(function () {
  "use strict";
  function follow(job) {
    var url = job.getAttribute("data-poll");
    var bar = document.getElementById("verify-progress");
    var count = document.getElementById("verify-count");
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          var json = (r.headers.get("content-type") || "").indexOf("application/json") === 0;
          if (!r.ok || !json || r.redirected) { window.location.reload(); throw new Error("session"); }
          return r.json();
        })
        .then(function (s) {
          if (bar) { bar.value = s.percent; bar.textContent = s.percent + "%"; }
          if (count) { count.textContent = s.done; }
          if (s.state === "running") { window.setTimeout(poll, 400); }
          else { window.location.reload(); }
        })
        .catch(function (e) { if (e.message !== "session") { window.setTimeout(poll, 2000); } });
    }
    poll();
  }
  document.addEventListener("DOMContentLoaded", function () {
    var job = document.getElementById("verify-job");
    if (job && job.getAttribute("data-state") === "running") { follow(job); }
  });
})();
