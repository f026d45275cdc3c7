// matengine dashboard: renders the state JSON and polls /dashboard/api/state about once a second.
// Everything is built with DOM calls (never innerHTML), so names and error texts stay text.
"use strict";

(function () {
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fba", "#e07b28", "#3a9a4a", "#b8398f", "#7a5bc4", "#1c9aa0", "#a0522d", "#d14b4b"];

  // ---------------------------------------------------------------- helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) el.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function fmtInt(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function fmtSeconds(sec) {
    if (sec === null || sec === undefined) return "–";
    const a = Math.abs(sec);
    let out;
    if (a < 60) out = a.toFixed(a < 10 ? 1 : 0) + " s";
    else if (a < 3600) out = Math.floor(a / 60) + " min " + Math.floor(a % 60) + " s";
    else if (a < 86400) out = Math.floor(a / 3600) + " h " + Math.floor((a % 3600) / 60) + " min";
    else out = Math.floor(a / 86400) + " d " + Math.floor((a % 86400) / 3600) + " h";
    return sec < 0 ? "-" + out : out;
  }

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function fmtShortDate(ms) {
    return new Date(ms).toISOString().replace("T", " ").slice(5, 16);
  }

  function badge(state) {
    return h("span", { class: "badge state-" + String(state).toLowerCase(), text: state });
  }

  function table(headers, rows, attrs) {
    return h("table", attrs || {},
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { text: t })))),
      h("tbody", {}, rows));
  }

  function empty(text) {
    return h("p", { class: "empty", text: text });
  }

  const kindColors = {};
  function colorOf(key) {
    if (!(key in kindColors)) kindColors[key] = PALETTE[Object.keys(kindColors).length % PALETTE.length];
    return kindColors[key];
  }

  // ---------------------------------------------------------------- sections
  function progressBar(run) {
    const pct = Math.round((run.progress || 0) * 1000) / 10;
    const fill = h("div", { class: "fill state-" + run.state.toLowerCase() });
    fill.style.width = pct + "%";
    return h("div", { class: "progress-cell" },
      h("div", {
        class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(run.chunks_total),
        "aria-valuenow": String(run.chunks_done), "data-testid": "progress-" + run.id,
      }, fill),
      h("span", { class: "chunks", "data-testid": "chunks-" + run.id },
        `${fmtInt(run.chunks_done)} / ${fmtInt(run.chunks_total)} chunks (${pct}%)`));
  }

  function renderRuns(runs) {
    if (!runs.length) return empty("No workflow runs yet.");
    const rows = [];
    for (const r of runs) {
      const where = r.datastack ? r.datastack + (r.table_name ? "." + r.table_name : "") : "–";
      const active = r.state === "RUNNING" || r.state === "PENDING";
      rows.push(h("tr", { "data-run-id": String(r.id), class: active ? "active" : null },
        h("td", { text: r.id }),
        h("td", { text: r.kind }),
        h("td", { text: where }),
        h("td", {}, badge(r.state), r.stalled ? h("span", { class: "badge state-stalled",
          "data-testid": "stalled-" + r.id, title: r.stalled, text: "STALLED" }) : null),
        h("td", { text: r.step || "–" }),
        h("td", {}, progressBar(r)),
        h("td", { class: "num", "data-testid": "rows-" + r.id, text: fmtInt(r.rows_done) }),
        h("td", { class: "num", text: r.rows_per_second === null ? "–" : fmtInt(Math.round(r.rows_per_second)) }),
        h("td", { class: "num", text: fmtSeconds(r.seconds) }),
        h("td", { class: "num", text: active ? fmtSeconds(r.eta_seconds) : "–" }),
        h("td", { class: r.error_count ? "errors" : null, text: r.error_count ? String(r.error_count) : "" })));
      if (r.stalled) {
        rows.push(h("tr", { class: "error-row" }, h("td", { colspan: "11" },
          h("span", { class: "message", text: "stalled: " + r.stalled }))));
      }
      if (r.errors && r.errors.length) {
        rows.push(h("tr", { class: "error-row" }, h("td", { colspan: "11" },
          h("ul", {}, r.errors.map((e) => h("li", {},
            h("span", { class: "when", text: fmtTime(e.at) }),
            e.step ? h("span", { class: "step", text: e.step }) : null,
            e.transient ? h("span", { class: "transient", text: "retried" }) : null,
            h("span", { class: "message", text: e.message })))))));
      }
    }
    return table(["run", "kind", "datastack.table", "state", "step", "progress", "rows", "rows/s",
      "elapsed", "ETA", "errors"], rows, { class: "runs" });
  }

  function stalenessClass(age) {
    if (age === null || age === undefined) return "stale";
    if (age < 3600) return "fresh";
    if (age < 86400) return "aging";
    return "stale";
  }

  function renderDatastacks(stacks) {
    if (!stacks.length) return empty("No datastack visible with this token.");
    return stacks.map((ds) => {
      const meta = [ds.segmentation_source, "voxel " + ds.voxel_resolution.join(" × ") + " nm"];
      if (ds.schedule) meta.push("schedule " + ds.schedule);
      if (ds.days_to_expire) meta.push("versions expire after " + ds.days_to_expire + " d");
      const rows = ds.tables.map((t) => h("tr", { "data-table": ds.name + "." + t.name },
        h("td", { text: t.name }),
        h("td", { text: t.schema }),
        h("td", { class: "num", title: t.rows_exact ? "exact" : "planner estimate",
          text: (t.rows_exact ? "" : "≈ ") + fmtInt(t.rows) }),
        h("td", { text: fmtTime(t.roots_last_updated) }),
        h("td", { class: "age " + stalenessClass(t.roots_age_seconds),
          text: t.roots_last_updated ? fmtSeconds(t.roots_age_seconds) + " ago" : "never" }),
        h("td", { text: fmtTime(t.last_modified) })));
      return h("article", { class: "datastack", "data-datastack": ds.name },
        h("h3", { text: ds.name }),
        ds.description ? h("p", { class: "description", text: ds.description }) : null,
        h("p", { class: "meta", text: meta.join(" · ") }),
        rows.length ? table(["table", "schema", "live rows", "roots valid at", "roots age",
          "last modified"], rows, { class: "tables" }) : empty("No tables."));
    });
  }

  // each table of a queryable version opens in Neuroglancer (links made by the server)
  function tableLinks(v) {
    const links = v.neuroglancer || {};
    return Object.entries(v.tables).map(([t, n], i) => [
      i ? ", " : "",
      links[t]
        ? h("a", { href: links[t], target: "_blank", rel: "noopener", "data-neuroglancer": t, text: t })
        : t,
      ": " + fmtInt(n),
    ]);
  }

  function renderVersions(versions) {
    if (!versions.length) return empty("No versions yet.");
    const rows = versions.map((v) => {
      const tables = Object.entries(v.tables).map(([t, n]) => t + ": " + fmtInt(n)).join(", ");
      let expiry = "never";
      if (v.pinned) {
        expiry = "never (pinned)";
      } else if (v.expires_on) {
        expiry = fmtTime(v.expires_on) + (v.expires_in_seconds > 0
          ? " (in " + fmtSeconds(v.expires_in_seconds) + ")" : " (past)");
      }
      return h("tr", { "data-version": v.datastack + ":" + v.version },
        h("td", { text: v.datastack }),
        h("td", { class: "num", text: v.version }),
        h("td", { text: fmtTime(v.time_stamp) }),
        h("td", {}, badge(v.status)),
        h("td", { text: expiry }),
        h("td", { class: "num", title: tables, text: fmtInt(v.rows) }),
        h("td", {}, tableLinks(v)),
        h("td", { class: "num", text: fmtSeconds(v.build_seconds) }));
    });
    return table(["datastack", "version", "timestamp", "status", "expires", "rows", "tables",
      "build time"], rows, { class: "versions" });
  }

  // ---------------------------------------------------------------- charts
  const W = 560, H = 230, M = { l: 70, r: 16, t: 14, b: 42 };

  function axes(svg, yMax, yLabel, xTicks) {
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    svg.append(s("line", { x1: M.l, y1: M.t + ih, x2: M.l + iw, y2: M.t + ih, class: "axis" }));
    svg.append(s("line", { x1: M.l, y1: M.t, x2: M.l, y2: M.t + ih, class: "axis" }));
    for (const f of [0, 0.5, 1]) {
      const y = M.t + ih - f * ih;
      svg.append(s("line", { x1: M.l, y1: y, x2: M.l + iw, y2: y, class: "grid" }));
      svg.append(s("text", { x: M.l - 6, y: y + 4, "text-anchor": "end", class: "tick" },
        yLabel(f * yMax)));
    }
    for (const [x, label] of xTicks) {
      svg.append(s("text", { x: x, y: M.t + ih + 16, "text-anchor": "middle", class: "tick" }, label));
    }
  }

  function chartVersions(versions) {
    // published versions only: a running one has partial counts, expired ones no tables left
    const pts = versions.filter((v) => v.status === "AVAILABLE")
      .map((v) => ({ ds: v.datastack, v: v.version, t: Date.parse(v.time_stamp), rows: v.rows, status: v.status }));
    if (!pts.length) return empty("No available version yet.");
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": "rows per version over time" });
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    let t0 = Math.min(...pts.map((p) => p.t)), t1 = Math.max(...pts.map((p) => p.t));
    if (t1 === t0) { t0 -= 3600e3; t1 += 3600e3; }
    const yMax = Math.max(1, ...pts.map((p) => p.rows)) * 1.1;
    const pad = 24;  // keep end points and their labels off the axes
    const X = (t) => M.l + pad + ((t - t0) / (t1 - t0)) * (iw - 2 * pad);
    const Y = (r) => M.t + ih - (r / yMax) * ih;
    axes(svg, yMax, (v) => fmtInt(Math.round(v)), [[X(t0), fmtShortDate(t0)], [X(t1), fmtShortDate(t1)]]);
    const byDs = {};
    for (const p of pts) (byDs[p.ds] = byDs[p.ds] || []).push(p);
    let legendX = M.l;
    for (const [ds, list] of Object.entries(byDs)) {
      list.sort((a, b) => a.t - b.t);
      const color = colorOf("ds:" + ds);
      svg.append(s("polyline", { points: list.map((p) => X(p.t) + "," + Y(p.rows)).join(" "),
        fill: "none", stroke: color, "stroke-width": 2 }));
      for (const p of list) {
        svg.append(s("circle", { cx: X(p.t), cy: Y(p.rows), r: 4, fill: color },
          s("title", {}, `${ds} v${p.v}: ${fmtInt(p.rows)} rows at ${fmtTime(new Date(p.t).toISOString())}`)));
        svg.append(s("text", { x: X(p.t), y: Y(p.rows) - 8, "text-anchor": "middle", class: "point-label" }, "v" + p.v));
      }
      svg.append(s("rect", { x: legendX, y: H - 14, width: 10, height: 10, fill: color }));
      svg.append(s("text", { x: legendX + 14, y: H - 5, class: "legend" }, ds));
      legendX += 24 + ds.length * 7;
    }
    return svg;
  }

  function chartRuns(runs) {
    const done = runs.filter((r) => r.finished && r.started).reverse().slice(-30);
    if (!done.length) return empty("No finished runs yet.");
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": "run durations" });
    const iw = W - M.l - M.r, ih = H - M.t - M.b;
    const yMax = Math.max(1, ...done.map((r) => r.seconds)) * 1.1;
    const slot = iw / done.length, bw = Math.min(slot, 36);
    axes(svg, yMax, (v) => fmtSeconds(v), []);
    const kinds = [];
    done.forEach((r, i) => {
      if (!kinds.includes(r.kind)) kinds.push(r.kind);
      const bh = (r.seconds / yMax) * ih;
      const x = M.l + i * slot + (slot - bw) / 2 + bw * 0.12;
      svg.append(s("rect", { x: x, y: M.t + ih - bh, width: bw * 0.76, height: Math.max(bh, 1),
        fill: colorOf("kind:" + r.kind), class: r.state === "SUCCESS" ? "run-bar" : "run-bar failed" },
        s("title", {}, `run ${r.id} ${r.kind} on ${r.datastack || "–"}: ${fmtSeconds(r.seconds)}, ` +
          `${fmtInt(r.rows_done)} rows, ${r.state}`)));
      if (done.length <= 16 || i % Math.ceil(done.length / 16) === 0) {
        svg.append(s("text", { x: x + bw * 0.38, y: M.t + ih + 14, "text-anchor": "middle", class: "tick" }, r.id));
      }
    });
    let legendX = M.l;
    for (const k of kinds) {
      svg.append(s("rect", { x: legendX, y: H - 14, width: 10, height: 10, fill: colorOf("kind:" + k) }));
      svg.append(s("text", { x: legendX + 14, y: H - 5, class: "legend" }, k));
      legendX += 24 + k.length * 7;
    }
    return svg;
  }

  // ---------------------------------------------------------------- loop
  function replace(id, content) {
    const el = document.getElementById(id);
    el.replaceChildren(...[content].flat());
  }

  function render(state) {
    replace("runs", renderRuns(state.runs));
    replace("datastacks", renderDatastacks(state.datastacks));
    replace("versions", renderVersions(state.versions));
    replace("chart-versions", chartVersions(state.versions));
    replace("chart-runs", chartRuns(state.runs));
    const active = state.runs.filter((r) => r.state === "RUNNING" || r.state === "PENDING").length;
    document.getElementById("status").textContent =
      `updated ${fmtTime(state.now)} · ${active} active run${active === 1 ? "" : "s"}`;
    document.getElementById("status").className = "status ok";
  }

  async function poll() {
    try {
      const resp = await fetch("/dashboard/api/state", { credentials: "same-origin", cache: "no-store" });
      if (resp.status === 401 || resp.status === 403) {
        window.location.reload(); // token revoked or cookie gone: the server shows the login form
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
    } catch (err) {
      const st = document.getElementById("status");
      st.textContent = "connection problem: " + err.message + " (retrying)";
      st.className = "status problem";
    }
    setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }

  function start() {
    const initial = document.getElementById("initial-state");
    if (initial) render(JSON.parse(initial.textContent));
    setTimeout(poll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
