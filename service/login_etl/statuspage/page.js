// Keeps the page current: fetches the same page again and swaps in its updated parts.
// The server is the only renderer (every value escaped there); this script builds no
// element from data and writes no markup, it moves nodes the server already rendered.
(function () {
  "use strict";
  var body = document.body;
  var every = Number(body.getAttribute("data-refresh-ms")) || 3000;
  var updates = 0;
  function state(name, text) {
    var badge = document.getElementById("state");
    badge.className = name;
    badge.textContent = text;
  }
  function swap(fresh, selector) {
    var old = document.querySelector(selector), next = fresh.querySelector(selector);
    if (!old || !next) { throw new Error("page without " + selector); }
    old.parentNode.replaceChild(document.importNode(next, true), old);
  }
  function refresh() {
    fetch("./", { cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        swap(fresh, "#generated");
        swap(fresh, "main");
        updates += 1;
        body.setAttribute("data-updates", String(updates));
        state("live", "live");
      })
      .catch(function () { state("stale", "stale: cannot reach the worker"); });
  }
  refresh();
  setInterval(refresh, every);
})();
