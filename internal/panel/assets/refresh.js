// Tracklink admin panel: reload the live part of the page every few
// seconds, the one thing a page does with JavaScript. It pauses while the
// tab is hidden or a form is being filled in (a file chosen, a field
// focused), and stops on any error: the page then works as without it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.refresh || !window.fetch || !window.DOMParser) return;
  var every = Number(live.dataset.refresh) * 1000;
  function busy() {
    var el = document.activeElement;
    if (el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT")) return true;
    var files = live.querySelectorAll("input[type=file]");
    for (var i = 0; i < files.length; i++) if (files[i].files && files[i].files.length) return true;
    return false;
  }
  function tick() {
    if (document.hidden || busy()) { setTimeout(tick, every); return; }
    fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("status " + r.status);
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("live");
        if (!next) throw new Error("no live part");
        if (!busy()) live.innerHTML = next.innerHTML;
        setTimeout(tick, every);
      })
      .catch(function () { /* leave the page as it is */ });
  }
  setTimeout(tick, every);
})();
