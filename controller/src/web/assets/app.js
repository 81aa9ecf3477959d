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
  let waiting = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(live.dataset.live, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        // A person filling a form keeps it: the part is replaced once they leave it.
        const active = document.activeElement;
        if (active && live.contains(active) && active.closest("form")) {
          waiting = true;
          return;
        }
        // A link that had the keyboard's focus keeps it after the replacement.
        const href = active && live.contains(active) ? active.getAttribute("href") : null;
        live.innerHTML = html;
        if (href) {
          const same = live.querySelector('a[href="' + CSS.escape(href) + '"]');
          if (same) same.focus();
        }
        document.body.dataset.updated = String(Date.now());
        confirmations();
      })
      .catch(function () {})
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  live.addEventListener("focusout", function () {
    setTimeout(function () {
      const active = document.activeElement;
      if (waiting && !(active && live.contains(active) && active.closest("form"))) {
        waiting = false;
        refresh();
      }
    }, 0);
  });
  const events = new EventSource("/events");
  events.addEventListener("change", refresh);
  // Once connected (and again after a reconnection), catch up with whatever changed
  // between the page's rendering and the stream's start.
  events.addEventListener("open", function () {
    document.body.dataset.stream = "open";
    refresh();
  });
  events.addEventListener("error", function () {
    document.body.dataset.stream = "closed";
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
