// Starts ReDoc from data- attributes of #redoc: the page has no inline script, so a strict CSP holds.
(function () {
  "use strict";
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, {}, root);
})();
