// tokensmith console: modal dialogs and the copy button. Pages work without it, except these.
"use strict";

(function () {
  var opener = null;

  function openDialog(dialog, from) {
    if (!dialog || dialog.open) return;
    opener = from || document.activeElement;
    dialog.showModal();
    // Focus the first field that needs attention, else the first field (showModal honours autofocus).
    var wrong = dialog.querySelector("[aria-invalid=true]");
    if (wrong) wrong.focus();
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-open], [data-close], [data-copy]");
    if (!target) return;
    if (target.hasAttribute("data-open")) {
      openDialog(document.getElementById(target.getAttribute("data-open")), target);
    } else if (target.hasAttribute("data-close")) {
      target.closest("dialog").close();
    } else {
      var field = document.getElementById(target.getAttribute("data-copy"));
      var done = function () {
        target.textContent = "Copied";
        setTimeout(function () { target.textContent = "Copy"; }, 2000);
      };
      if (navigator.clipboard) {
        navigator.clipboard.writeText(field.value).then(done, function () { field.select(); });
      } else {
        field.select();
      }
    }
  });

  // Focus goes back where it came from when a dialog closes (Esc, Cancel or Done).
  document.querySelectorAll("dialog").forEach(function (dialog) {
    dialog.addEventListener("close", function () {
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
      if (dialog.id === "reveal-dialog") {
        // The secret leaves the page once its dialog is closed.
        dialog.querySelectorAll("input, textarea, pre, a[download]").forEach(function (el) { el.remove(); });
      }
    });
  });

  // A dialog the server wants open: the create form with errors, or a one-time reveal.
  document.querySelectorAll("dialog[data-autoopen]").forEach(function (dialog) {
    openDialog(dialog, document.querySelector("[data-open='" + dialog.id + "']"));
  });
})();
