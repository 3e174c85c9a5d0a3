/* gruwatch live fleet view: polls gruwatch/fleet (the tiles changed since its previous answer, the
   "needs attention" rows, and HTML fragments for the header, banner, feed and agents), draws it, and
   asks again refresh_ms after drawing — never two polls on their way, so a slow server delays the
   page but never starves it. Tiles are kept and only what changed is written (text, class,
   sparkline); clicks on a tile or an attention row select that sensor. Served by the app itself. */
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
  var stateAt = window.gwStateAt = {};  /* key -> wall ms of the tile's latest state change on the page */
  var nodes = {};  /* key -> {el, state, score, points}: tiles persist; each tick only changes what changed */

  var xs = {};  /* n -> the sparkline's n x coordinates, as text */
  function points(values) {
    var n = values.length, x = xs[n], out = new Array(n);
    if (!x) {
      x = xs[n] = [];
      for (var j = 0; j < n; j++) x.push((n > 1 ? Math.round((j / (n - 1)) * 1000) / 10 : 0) + ",");
    }
    for (var i = 0; i < n; i++) out[i] = x[i] + Math.round(190 - values[i] * 1.8) / 10;  /* score % -> 19..1 */
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
    return { el: el, st: st, sc: sc, line: line, row: null, state: null, last: null, score: null, pts: null };
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
    } else { /* worst first: by state, then by name, so a tile keeps its place while its state holds
                (sorting by the score too would shuffle hundreds of tiles a second: unreadable, and
                the browser re-lays out every tile it moves) */
      shown.sort(function (a, b) {
        return URGENCY[a[1]] - URGENCY[b[1]] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
      });
    }
    var keep = {};
    var cur = grid.firstChild;  /* walks the grid once: O(tiles), whatever moved */
    for (var i = 0; i < shown.length; i++) {
      var t = shown[i], key = t[0], n = nodes[key];
      keep[key] = true;
      if (!n) n = nodes[key] = makeTile(key);
      if (n.row !== t) {  /* a new row for this tile came with the latest poll */
        n.row = t;
        update(n, t);
      }
      if (cur === n.el) cur = cur.nextSibling;
      else grid.insertBefore(n.el, cur);  /* moves only what is out of place */
    }
    while (cur) {  /* tiles filtered out */
      var next = cur.nextSibling;
      grid.removeChild(cur);
      cur = next;
    }
    for (var k in nodes) if (!keep[k] && !nodes[k].el.parentNode) delete nodes[k];
    return shown.length;
  }

  function update(n, t) {
    var key = t[0];
    if (n.state !== t[1] || n.last !== t[4]) {
      var label = t[1] === "stale" ? "stale (" + t[4] + ")" : t[1];
      n.el.className = "tile s-" + t[1];
      n.el.setAttribute("data-state", t[1]);
      stateAt[key] = Date.now();  /* when this tile last changed state (the load benchmark reads it) */
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

  /* ---- the poll: GET gruwatch/fleet, draw, wait refresh_ms, ask again (never two on their way) ---- */
  var tiles = {};        /* key -> tile row [key, state, score, sparkline, last], merged from deltas */
  var last = null;       /* the previous answer's {epoch, version, now}: the next poll asks for a delta */
  var view = { states: ["ok", "warning", "alarm", "stale"], text: "", sort: "urgency" };
  var shownHtml = {};    /* fragment id -> the HTML it shows: swapped only when it changes */
  var reorder = true;    /* the grid's order or membership may have changed: filter, sort and walk it */
  var changed = [];      /* rows that came since the last draw (when only they need writing) */
  var failures = 0;

  function setHtml(id, html) {
    var el = document.getElementById(id);
    if (!el || shownHtml[id] === html) return;
    el.innerHTML = html;
    shownHtml[id] = html;
  }

  function setBanner(text) {
    var el = document.getElementById("banner");
    if (!el) return;
    if (text) {
      if (el.textContent !== text) el.textContent = text;
      el.style.display = "block";
    } else if (el.style.display !== "none") {
      el.style.display = "none";
    }
  }

  function draw() {
    var grid = document.getElementById("fleet-grid");
    var attn = document.getElementById("attention");
    var summary = document.getElementById("fleet-summary");
    if (!grid || !attn || !summary || !last) return false;  /* Dash has not rendered the layout yet */
    var t0 = performance.now();
    listen(grid);
    listen(attn);
    var rows = Object.keys(tiles).map(function (k) { return tiles[k]; });
    var shown;
    if (reorder || view.sort === "score") {
      shown = renderTiles(grid, rows, view.states, view.text, view.sort);
    } else {  /* same tiles in the same order: write only the rows that changed */
      for (var i = 0; i < changed.length; i++) {
        var n = nodes[changed[i][0]];
        if (n && n.row !== changed[i]) {
          n.row = changed[i];
          update(n, changed[i]);
        }
      }
      shown = grid.children.length;
    }
    reorder = false;
    changed = [];
    setHtml("attention", renderAttention(last.attention, 8));
    summary.textContent = "showing " + shown + " of " + rows.length + " sensors";
    var r = window.gwRender = { ms: performance.now() - t0, tiles: shown, at: Date.now(), version: last.version };
    requestAnimationFrame(function () {  /* the frame after it: style, layout and paint included */
      requestAnimationFrame(function () { r.frame_ms = performance.now() - t0; });
    });
    return true;
  }

  function apply(d) {
    if (d.full) {
      tiles = {};
      reorder = true;
    }
    for (var i = 0; i < d.tiles.length; i++) {
      var t = d.tiles[i], before = tiles[t[0]];
      if (!before || before[1] !== t[1]) reorder = true;  /* a new tile, or one that changed state */
      tiles[t[0]] = t;
      changed.push(t);
    }
    last = d;
    setBanner(d.banner);
    setHtml("chips", d.html.chips);
    setHtml("alarm-feed", d.html.feed);
    setHtml("agents", d.html.agents);
    setHtml("rates", d.html.rates);
  }

  function refreshMs() {
    var c = document.getElementById("gw-config");
    var ms = c ? parseInt(c.getAttribute("data-refresh-ms"), 10) : NaN;
    return isFinite(ms) && ms > 0 ? ms : 1000;
  }

  function poll() {
    var t0 = performance.now();
    var q = last ? "?epoch=" + encodeURIComponent(last.epoch) + "&version=" + last.version + "&at=" + last.now : "";
    fetch("gruwatch/fleet" + q, { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (d) {
        failures = 0;
        apply(d);
        if (!draw()) last = null;  /* layout not there yet: ask for everything again next time */
      })
      .catch(function (e) {
        failures += 1;
        if (failures >= 2) setBanner("The dashboard server does not answer (" + e.message + "); retrying…");
      })
      .then(function () {
        var wait = refreshMs() - (performance.now() - t0);
        setTimeout(poll, Math.max(50, wait));
      });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", poll);
  } else {
    poll();
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    gruwatch: {
      setView: function (states, text, sort) {
        view = { states: states || [], text: text || "", sort: sort || "urgency" };
        reorder = true;
        draw();
        return view;
      },
      close: function () { return null; }
    }
  });
})();
