// Idle logout for release station pages: after data-idle seconds without a touch or key,
// log out (the logout form, with its CSRF token) or, on the login page, clear the forms.
// The server ends idle sessions by itself too; this only makes the kiosk screen follow.
(function () {
  "use strict";
  var idle = parseInt(document.body.getAttribute("data-idle") || "0", 10);
  if (!idle) { return; }
  var logout = document.getElementById("logout");
  var countdown = document.getElementById("countdown");
  var last = Date.now();
  function reset() { last = Date.now(); }
  ["pointerdown", "keydown", "touchstart", "wheel", "input"].forEach(function (name) {
    document.addEventListener(name, reset, { passive: true, capture: true });
  });
  var timer = setInterval(function () {
    var left = idle - Math.floor((Date.now() - last) / 1000);
    if (countdown) {
      countdown.textContent = left <= 15 ? " (in " + Math.max(left, 0) + " s)" : "";
    }
    if (left > 0) { return; }
    if (logout) {
      document.getElementById("idle-flag").value = "1";
      clearInterval(timer);
      logout.submit();
    } else {
      Array.prototype.forEach.call(document.forms, function (f) { f.reset(); });
      var card = document.getElementById("card");
      if (card) { card.focus(); }
      reset();
    }
  }, 1000);
})();
