// Vigie's web view: live updates and the typed confirmations. Served from the binary
// (no inline script: the Content-Security-Policy forbids it).
"use strict";

// Live: when the server says something changed, fetch the page's live part again and
// put it in place, without reloading. A change during a fetch fetches once more after.
(function () {
  const live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
  let busy = false;
  let again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(live.dataset.live, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        // Keep what a person is typing: a page with a filled field is not replaced.
        const typing = live.querySelector("input:not([type=hidden])");
        if (typing && typing.value !== "" && live.contains(document.activeElement)) return;
        live.innerHTML = html;
        document.body.dataset.updated = String(Date.now());
        confirmations();
      })
      .catch(function () {})
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  const events = new EventSource("/events");
  events.addEventListener("change", refresh);
  events.addEventListener("open", function () {
    document.body.dataset.live = "on";
  });
  events.addEventListener("error", function () {
    document.body.dataset.live = "off";
  });
})();

// A promotion or rollback is sent only once the confirmation word is typed.
function confirmations() {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    const input = form.querySelector("input[name=confirm]");
    const button = form.querySelector("button[type=submit]");
    if (!input || !button) return;
    const check = function () { button.disabled = input.value.trim() !== form.dataset.confirm; };
    input.addEventListener("input", check);
    check();
  });
}
confirmations();
