// An execution's live output: its <section data-output="url"> is refreshed every second
// until the latest attempt's output is finished. textContent only: the text is never HTML.
(function () {
  "use strict";

  function follow(box) {
    var url = box.getAttribute("data-output");
    var streams = { stdout: box.querySelector('[data-stream="stdout"]'),
                    stderr: box.querySelector('[data-stream="stderr"]') };
    var state = box.querySelector("[data-output-state]");
    function show(data) {
      ["stdout", "stderr"].forEach(function (name) {
        var pre = streams[name];
        if (pre.textContent === data[name]) return;
        var atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 4;
        pre.textContent = data[name];
        pre.hidden = name === "stderr" && !data[name];
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      });
      state.textContent = "attempt " + data.attempt + (data.finished ? " · finished" : " · live");
      box.setAttribute("data-finished", data.finished ? "true" : "false");
    }
    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          show(data);
          if (!data.finished) setTimeout(tick, 1000);
        })
        .catch(function () {
          state.textContent = "offline · retrying";
          setTimeout(tick, 2000);
        });
    }
    if (box.getAttribute("data-finished") !== "true") tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-output]").forEach(follow);
  });
})();
