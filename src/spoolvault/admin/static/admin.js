// Options > General: Spool File Encryption and Print Archiving exclude each other. While one
// box is ticked the other is disabled and its reason shown, as the server renders it; this
// only keeps that true while the administrator clicks, before saving. The server refuses
// both on together whatever the browser sends.
(function () {
  "use strict";
  var boxes = document.querySelectorAll("input[data-excludes]");
  if (!boxes.length) { return; }
  function sync() {
    Array.prototype.forEach.call(boxes, function (box) {
      var other = document.getElementById(box.getAttribute("data-excludes"));
      var why = document.getElementById(box.id + "-why");
      if (!other || !why) { return; }
      var blocked = other.checked;
      box.disabled = blocked;
      if (blocked) {
        var otherLabel = other.parentNode.textContent.trim().replace(/^Enable /, "");
        why.textContent = "Disabled because " + otherLabel + " is ticked. " +
          why.getAttribute("data-reason");
        why.hidden = false;
        box.setAttribute("aria-describedby", why.id);
      } else {
        why.hidden = true;
        box.removeAttribute("aria-describedby");
      }
    });
  }
  Array.prototype.forEach.call(boxes, function (box) { box.addEventListener("change", sync); });
})();
