/* gruwatch live fleet view: draws the tiles and the "needs attention" list from the compact data the
   server sends each tick; tiles are kept and only what changed is written (text, class, sparkline), and
   turns clicks on a tile or an attention row into the selected sensor. Served by the app itself. */
(function () {
  "use strict";
  var URGENCY = { alarm: 0, warning: 1, stale: 2, ok: 3 };

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    if (s < 90) return Math.round(s) + " s";
    if (s < 90 * 60) return Math.round(s / 60) + " min";
    if (s < 48 * 3600) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " days";
  }

  function select(key) {
    if (window.dash_clientside && window.dash_clientside.set_props) {
      window.dash_clientside.set_props("selected", { data: key });
    }
  }

  function listen(el) {
    if (!el || el.dataset.gwListening) return;
    el.dataset.gwListening = "1";
    el.addEventListener("click", function (ev) {
      var node = ev.target.closest("[data-key]");
      if (node) select(node.getAttribute("data-key"));
    });
  }

  var SVG = "http://www.w3.org/2000/svg";
  var nodes = {};  /* key -> {el, state, score, points}: tiles persist; each tick only changes what changed */

  function points(values) {
    var n = values.length, out = new Array(n);
    for (var i = 0; i < n; i++) {
      out[i] = (n > 1 ? (i / (n - 1)) * 100 : 0).toFixed(1) + "," + (19 - (values[i] / 100) * 18).toFixed(1);
    }
    return out.join(" ");
  }

  function makeTile(key) {
    var el = document.createElement("div");
    el.setAttribute("data-key", key);
    var name = document.createElement("div");
    name.className = "name";
    name.textContent = key;
    var row = document.createElement("div");
    row.className = "row";
    var st = document.createElement("span");
    st.className = "state";
    var sc = document.createElement("span");
    sc.className = "score";
    row.appendChild(st);
    row.appendChild(sc);
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 100 20");
    svg.setAttribute("preserveAspectRatio", "none");
    var line = document.createElementNS(SVG, "polyline");
    svg.appendChild(line);
    el.appendChild(name);
    el.appendChild(row);
    el.appendChild(svg);
    return { el: el, st: st, sc: sc, line: line, state: null, last: null, score: null, pts: null };
  }

  function renderTiles(grid, tiles, states, text, sort) {
    var wanted = {};
    (states || []).forEach(function (s) { wanted[s] = true; });
    var needle = (text || "").trim().toLowerCase();
    var shown = tiles.filter(function (t) {
      return wanted[t[1]] && (!needle || t[0].toLowerCase().indexOf(needle) >= 0);
    });
    if (sort === "name") {
      shown.sort(function (a, b) { return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0; });
    } else if (sort === "score") {
      shown.sort(function (a, b) { return b[2] - a[2] || (a[0] < b[0] ? -1 : 1); });
    } else { /* worst first: state, then score */
      shown.sort(function (a, b) {
        return URGENCY[a[1]] - URGENCY[b[1]] || b[2] - a[2] || (a[0] < b[0] ? -1 : 1);
      });
    }
    var keep = {};
    for (var i = 0; i < shown.length; i++) {
      var t = shown[i], key = t[0], n = nodes[key];
      keep[key] = true;
      if (!n) n = nodes[key] = makeTile(key);
      if (n.state !== t[1] || n.last !== t[4]) {
        var label = t[1] === "stale" ? "stale (" + t[4] + ")" : t[1];
        n.el.className = "tile s-" + t[1];
        n.el.setAttribute("data-state", t[1]);
        n.st.textContent = label;
        n.state = t[1];
        n.last = t[4];
      }
      if (n.score !== t[2]) {
        n.sc.textContent = t[2].toFixed(2);
        n.el.title = key + ": score " + t[2].toFixed(3) + " (higher = worse)";
        n.score = t[2];
      }
      var pts = points(t[3]);
      if (n.pts !== pts) {
        n.line.setAttribute("points", pts);
        n.pts = pts;
      }
      var at = grid.children[i];
      if (at !== n.el) grid.insertBefore(n.el, at || null);  /* moves only what is out of place */
    }
    while (grid.children.length > shown.length) grid.removeChild(grid.lastChild);
    for (var k in nodes) if (!keep[k] && !nodes[k].el.parentNode) delete nodes[k];
    return shown.length;
  }

  function renderAttention(rows, limit) {
    if (!rows.length) return "<p class='gw-note'>Nothing needs attention: every sensor is ok and reporting.</p>";
    var out = ["<table class='gw-attn'><thead><tr><th>sensor</th><th>state</th><th>score</th>" +
      "<th>for</th><th>by when</th><th>basis</th></tr></thead><tbody>"];
    rows.slice(0, limit).forEach(function (r) {
      var when = r.state === "alarm" ? "now" : r.eta_s === null ? "–" : r.eta_s <= 0 ? "now" : "in ~" + duration(r.eta_s);
      out.push("<tr data-key='" + esc(r.key) + "'><td>" + esc(r.key) + "</td><td class='st-" + r.state + "'>" +
        r.state + "</td><td>" + r.score.toFixed(2) + "</td><td>" + duration(r.for_s) + "</td><td>" + when +
        "</td><td class='gw-note'>" + esc(r.basis) + "</td></tr>");
    });
    out.push("</tbody></table>");
    if (rows.length > limit) out.push("<p class='gw-note'>… and " + (rows.length - limit) + " more (filter the tiles below).</p>");
    return out.join("");
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    gruwatch: {
      renderFleet: function (data, states, text, sort) {
        if (!data) return "waiting for the first update…";
        var t0 = performance.now();
        var grid = document.getElementById("fleet-grid");
        var attn = document.getElementById("attention");
        listen(grid);
        listen(attn);
        var shown = grid ? renderTiles(grid, data.tiles, states, text, sort) : 0;
        if (attn) attn.innerHTML = renderAttention(data.attention, 8);
        var ms = performance.now() - t0;
        window.gwRender = { ms: ms, tiles: shown, at: Date.now(), version: data.now };
        return "showing " + shown + " of " + data.tiles.length + " sensors";
      },
      close: function () { return null; }
    }
  });
})();
