/* Usher dashboard: live refresh (every 2 s) and charts as inline SVG. No dependencies.
 *
 * An element with data-live="URL" is refreshed from that JSON: {cells, marks} fill the
 * [data-cell] elements outside rows and {flags} show or hide its [data-flag] badges,
 * {rows: [{key, cells, marks, flags, spark}]} do the same in the rows [data-key], {html}
 * replaces its [data-fragment] tables, and {chart} redraws the svg[data-chart]. All text
 * arrives formatted, and all HTML rendered, by the server.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var HOUR_S = 3600;
  var MIN_WINDOW_S = 300;
  var STEPS_S = [60, 120, 300, 600, 900];  // the time axis' step: at most 6 of them

  function node(name, attrs, parent, text) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { el.setAttribute(key, attrs[key]); });
    if (text !== undefined) el.textContent = text;
    if (parent) parent.appendChild(el);
    return el;
  }

  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
  }

  /* The time the series span, back from now: the last hour once there is an hour of samples,
   * else what there is (at least 5 minutes), in whole steps of the time axis. */
  function timeWindow(series) {
    var oldest = series.reduce(function (m, points) {
      return points && points.length ? Math.max(m, -points[0][0]) : m;
    }, 0);
    var span = Math.min(Math.max(oldest, MIN_WINDOW_S), HOUR_S);
    var step = STEPS_S.filter(function (s) { return span / s <= 6; })[0] || 900;
    var seconds = Math.min(Math.ceil(span / step) * step, HOUR_S);
    return { seconds: seconds, step: step };
  }

  function windowLabel(seconds) {
    return seconds >= HOUR_S ? "last hour" : "last " + Math.round(seconds / 60) + " min";
  }

  var TICKS = 5;

  /* The smallest of 1, 2, 5, 10, 20, 50... that is at least ``value``. */
  function niceStep(value) {
    if (value <= 1) return 1;
    var base = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * base >= value) return steps[i] * base;
    }
    return 10 * base;
  }

  /* An axis of TICKS whole steps covering ``max``, in seconds, minutes or hours. */
  function scale(max, seconds) {
    var unit = !seconds ? [1, ""] : max <= 120 ? [1, "s"] : max <= 7200 ? [60, "m"] : [3600, "h"];
    var step = niceStep(max / unit[0] / TICKS);
    return {
      top: step * TICKS * unit[0],
      label: function (i) { return (step * i).toLocaleString("en-US") + unit[1]; }
    };
  }

  function pathOf(points, x, y) {
    return points.map(function (p, i) {
      return (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1);
    }).join("");
  }

  function maxOf(points) {
    return points.reduce(function (m, p) { return Math.max(m, p[1]); }, 0);
  }

  /* A sparkline of [[seconds ago (negative), value], ...] over ``seconds`` back from now, its
   * peak written beside it so that its height reads as a number. */
  function spark(svg, points, seconds) {
    clear(svg);
    var box = svg.viewBox.baseVal, w = box.width, h = box.height;
    var peak = svg.parentNode.querySelector(".spark-peak");
    if (!points || !points.length) {
      node("text", { x: w / 2, y: h / 2 + 4, "text-anchor": "middle", "class": "empty" }, svg,
        "no samples yet");
      if (peak) peak.textContent = "";
      return;
    }
    var most = maxOf(points), top = Math.max(1, most);
    var x = function (t) { return 2 + (Math.max(t, -seconds) + seconds) / seconds * (w - 5); };
    var y = function (v) { return h - 2 - v / top * (h - 6); };
    var line = pathOf(points, x, y);
    var first = points[0], last = points[points.length - 1];
    node("line", { x1: 1, x2: w - 1, y1: h - 1.5, y2: h - 1.5, "class": "base" }, svg);
    node("path", {
      d: line + "L" + x(last[0]).toFixed(1) + "," + (h - 2) + "L" + x(first[0]).toFixed(1) + "," +
        (h - 2) + "Z",
      "class": "area"
    }, svg);
    node("path", { d: line, "class": "line" }, svg);
    node("circle", { cx: x(last[0]).toFixed(1), cy: y(last[1]).toFixed(1), r: 2.2, "class": "dot" }, svg);
    node("title", {}, svg, "now " + last[1] + " waiting; at most " + most + " in the " +
      windowLabel(seconds));
    if (peak) peak.textContent = "max " + most.toLocaleString("en-US");
  }

  /* Every sparkline of the page on one time axis: ``series`` maps an svg to its points. */
  function sparks(series) {
    var span = timeWindow(series.map(function (s) { return s[1]; }));
    series.forEach(function (s) { spark(s[0], s[1], span.seconds); });
    if (!series.some(function (s) { return s[1] && s[1].length; })) return;  // no window yet
    document.querySelectorAll("[data-spark-window]").forEach(function (el) {
      el.textContent = "Waiting, " + windowLabel(span.seconds);
    });
  }

  /* The action chart: waiting executions (left axis) and oldest wait (right axis). */
  function chart(svg, data) {
    clear(svg);
    var box = svg.viewBox.baseVal, w = box.width, h = box.height;
    var m = { left: 44, right: 52, top: 10, bottom: 24 };
    var iw = w - m.left - m.right, ih = h - m.top - m.bottom;
    var depth = data.depth || [], wait = data.wait || [];
    var span = timeWindow([depth, wait]), seconds = span.seconds;
    var depthAxis = scale(maxOf(depth), false), waitAxis = scale(maxOf(wait), true);
    var x = function (t) { return m.left + (Math.max(t, -seconds) + seconds) / seconds * iw; };
    var yDepth = function (v) { return m.top + ih - v / depthAxis.top * ih; };
    var yWait = function (v) { return m.top + ih - v / waitAxis.top * ih; };
    for (var i = 0; i <= TICKS; i++) {
      var gy = m.top + ih - i / TICKS * ih;
      node("line", { x1: m.left, x2: m.left + iw, y1: gy, y2: gy, "class": "grid-line" }, svg);
      node("text", { x: m.left - 6, y: gy + 4, "text-anchor": "end", "class": "axis depth" }, svg,
        String(depthAxis.label(i)));
      node("text", { x: m.left + iw + 6, y: gy + 4, "class": "axis wait" }, svg, waitAxis.label(i));
    }
    for (var t = -seconds; t <= 0; t += span.step) {
      node("text", {
        x: x(t), y: h - 6, "text-anchor": t === 0 ? "end" : t === -seconds ? "start" : "middle",
        "class": "axis time"
      }, svg, t === 0 ? "now" : t / 60 + " min");
    }
    var title = svg.closest(".card").querySelector("[data-chart-window]");
    if (title) title.textContent = windowLabel(seconds).replace("last", "Last");
    if (depth.length) {
      var line = pathOf(depth, x, yDepth);
      var base = (m.top + ih).toFixed(1);
      node("path", {
        d: line + "L" + x(depth[depth.length - 1][0]).toFixed(1) + "," + base + "L" +
          x(depth[0][0]).toFixed(1) + "," + base + "Z",
        "class": "depth-area"
      }, svg);
      node("path", { d: line, "class": "depth-line" }, svg);
    }
    if (wait.length) node("path", { d: pathOf(wait, x, yWait), "class": "wait-line" }, svg);
    var age = depth.length ? -depth[depth.length - 1][0] : HOUR_S;
    if (depth.length < 2) {
      node("text", { x: m.left + iw / 2, y: m.top + ih / 2, "text-anchor": "middle", "class": "empty" },
        svg, "samples appear as the sweeper runs (every 15 s)");
    } else if (age > 120) {  // written over the gap on the right, where nothing is drawn
      node("text", { x: m.left + iw - 4, y: m.top + 14, "text-anchor": "end", "class": "empty" },
        svg, "no samples for " + Math.round(age / 60) + " min: is usher beat running?");
    }
  }

  function fill(scope, cells, marks, inRows) {
    scope.querySelectorAll("[data-cell]").forEach(function (el) {
      if (!inRows && el.closest("[data-key]")) return;
      var name = el.getAttribute("data-cell");
      if (cells && Object.prototype.hasOwnProperty.call(cells, name)) {
        if (el.textContent !== cells[name]) el.textContent = cells[name];
      }
      if (marks && Object.prototype.hasOwnProperty.call(marks, name)) {
        el.setAttribute("data-mark", marks[name]);
      }
    });
  }

  /* Shows or hides each [data-flag] element: a badge such as "paused". */
  function flag(scope, flags, inRows) {
    if (!flags) return;
    scope.querySelectorAll("[data-flag]").forEach(function (el) {
      if (!inRows && el.closest("[data-key]")) return;
      var name = el.getAttribute("data-flag");
      if (Object.prototype.hasOwnProperty.call(flags, name)) el.hidden = !flags[name];
    });
  }

  /* The tables the server rendered again: each [data-fragment] of ``html`` replaces the
   * page's element of that name, unless the keyboard is in it (a focused button stays). */
  function swap(scope, html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    fresh.querySelectorAll("[data-fragment]").forEach(function (el) {
      var name = el.getAttribute("data-fragment");
      var old = scope.querySelector('[data-fragment="' + CSS.escape(name) + '"]');
      if (!old || old.contains(document.activeElement) || old.innerHTML === el.innerHTML) return;
      old.replaceWith(document.importNode(el, true));
    });
  }

  function apply(scope, data) {
    fill(scope, data.cells, data.marks, false);
    flag(scope, data.flags, false);
    var series = [];
    (data.rows || []).forEach(function (row) {
      var tr = scope.querySelector('[data-key="' + CSS.escape(row.key) + '"]');
      if (!tr) return;
      fill(tr, row.cells, row.marks, true);
      flag(tr, row.flags, true);
      var svg = tr.querySelector("svg[data-spark]");
      if (svg && row.spark) series.push([svg, row.spark]);
    });
    if (series.length) sparks(series);
    if (data.html) swap(scope, data.html);
    if (data.chart) {
      scope.querySelectorAll("svg[data-chart]").forEach(function (svg) { chart(svg, data.chart); });
    }
  }

  function showStatus(ok, at) {
    var live = document.getElementById("live");
    if (!live) return;
    live.hidden = false;
    live.classList.toggle("offline", !ok);
    live.textContent = ok ? "live · " + new Date(at).toLocaleTimeString() : "offline · retrying";
  }

  function start(scope) {
    var url = scope.getAttribute("data-live");
    var interval = parseInt(scope.getAttribute("data-interval"), 10) || 2000;
    function tick() {
      if (document.hidden) {
        setTimeout(tick, interval);
        return;
      }
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status === 401) {
            window.location.assign("/login?next=" +
              encodeURIComponent(window.location.pathname + window.location.search));
            throw new Error("logged out");
          }
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          apply(scope, data);
          showStatus(true, data.at);
        })
        .catch(function () { showStatus(false); })
        .then(function () { setTimeout(tick, interval); });
    }
    tick();
  }

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var series = [];
    document.querySelectorAll("svg[data-spark][data-points]").forEach(function (svg) {
      try { series.push([svg, JSON.parse(svg.getAttribute("data-points"))]); } catch (e) { /* next tick */ }
    });
    if (series.length) sparks(series);
    document.querySelectorAll("[data-live]").forEach(start);
  });
})();
