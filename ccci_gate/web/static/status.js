// The status page: /status.json drawn every REFRESH_MS, no framework, no build step.
// Every string from the server reaches the page through textContent (never innerHTML),
// and links only when they are http(s) or local, so a change title or a project name
// cannot inject markup.
"use strict";
(function () {
  const REFRESH_MS = 2000;
  const params = new URLSearchParams(location.search);
  let filter = (params.get("q") || "").trim();
  let last = null;          // the last status document
  let skew = 0;             // server clock - client clock, seconds
  let fetchError = "";

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // http(s) given whole, or a link that resolves to this site: resolved as the browser
  // does (it reads "/\\host" and "/<tab>/host" as "//host", another site)
  function safeUrl(url) {
    if (typeof url !== "string" || !url) return "";
    let parsed;
    try { parsed = new URL(url, location.href); } catch (e) { return ""; }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return "";
    if (/^https?:\/\//i.test(url) || parsed.origin === location.origin) return parsed.href;
    return "";
  }

  function link(url, text, cls) {
    const href = safeUrl(url);
    if (!href) return el("span", cls, text);
    const a = el("a", cls, text);
    a.href = href;
    return a;
  }

  function fmt(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "?";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor(s / 60) % 60).padStart(2, "0") + " min";
  }

  function now() { return Date.now() / 1000 + skew; }

  function matches(item) {
    if (!filter) return true;
    const c = item.change || {};
    const hay = [c.id, c.project, c.number === null ? "" : "#" + c.number, c.title]
      .join(" ").toLowerCase();
    return filter.toLowerCase().split(/\s+/).every((word) => hay.includes(word));
  }

  // --- builds ----------------------------------------------------------------------------

  function buildProgress(build) {
    // [fraction 0..1 or null (unknown), text]
    if (build.result) {
      const took = build.duration !== null && build.duration !== undefined ? " in " + fmt(build.duration) : "";
      return [1, build.result + took];
    }
    if (build.started_at) {
      const ran = now() - build.started_at;
      const p = build.progress || [0, 0];
      if (p[1] > 0) return [p[0] / p[1], p[0] + "/" + p[1] + ", running " + fmt(ran)];
      if (build.estimate) {
        const left = build.estimate - ran;
        return [Math.min(1, ran / build.estimate),
                left > 0 ? "~" + fmt(left) + " left" : "over its estimate of " + fmt(build.estimate)];
      }
      return [null, "running " + fmt(ran)];
    }
    if (build.id) return [0, "queued" + (build.estimate ? ", takes ~" + fmt(build.estimate) : "")];
    return [0, "waiting"];
  }

  function renderBuild(build) {
    const state = build.result ? "done" : (build.started_at ? "running" : (build.id ? "queued" : "waiting"));
    const li = el("li", "build state-" + state + (build.result ? " result-" + build.result : ""));
    li.dataset.job = build.name;
    if (build.id) li.dataset.buildId = build.id;
    li.appendChild(el("span", "job", build.name + (build.voting === false ? " (non-voting)" : "")));
    const [fraction, text] = buildProgress(build);
    const bar = el("span", "bar" + (fraction === null ? " indeterminate" : ""));
    const fill = el("span", "fill");
    fill.style.width = (fraction === null ? 100 : Math.round(fraction * 100)) + "%";
    bar.appendChild(fill);
    bar.setAttribute("role", "progressbar");
    if (fraction !== null) bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    li.appendChild(bar);
    li.appendChild(el("span", "eta", text));
    const links = el("span", "links");
    const logs = (build.logs || []).filter(Boolean);
    logs.slice(0, -1).forEach((url, i) => links.appendChild(link(url, "attempt " + (i + 1), "log-attempt")));
    if (build.log_url) links.appendChild(link(build.log_url, "log", "log"));
    if (build.id && !build.result) links.appendChild(link("/console/" + build.id, "console", "console"));
    if (build.url) links.appendChild(link(build.url, "worker", "worker"));
    li.appendChild(links);
    if (build.message) li.title = build.message;
    return li;
  }

  // --- items and queues ------------------------------------------------------------------

  function renderItem(item, dependent) {
    const result = item.result ? " result-" + item.result : "";
    const li = el("li", "item state-" + item.state + result + (item.active ? " active" : "")
                  + (item.aside ? " aside" : ""));
    li.dataset.itemId = item.item_id;
    li.dataset.change = (item.change && item.change.id) || "";
    li.appendChild(el("span", "node"));
    const body = el("div", "body");
    const head = el("div", "head");
    const c = item.change || {};
    head.appendChild(link(c.url || item.status_url, c.id || item.item_id, "change"));
    if (c.title) head.appendChild(el("span", "title", c.title));
    head.appendChild(el("span", "badge state", item.state));
    if (item.result) head.appendChild(el("span", "badge result", item.result));
    if (item.quick) head.appendChild(el("span", "badge", "quick"));
    if (item.aside) head.appendChild(el("span", "badge aside-badge", "set aside by batching"));
    if (item.proven) head.appendChild(el("span", "badge", "proven in a batch"));
    head.appendChild(el("span", "age muted", "queued " + fmt(now() - item.enqueued_at)));
    head.appendChild(link(item.status_url, "details", "details"));
    if (item.buildset && item.buildset.id) {
      head.appendChild(link("/artifacts/" + item.buildset.id + "/", "artifacts", "artifacts"));
    }
    body.appendChild(head);
    if (dependent) {
      // what its speculative ref holds ahead of it: the non-failing items ahead
      const held = ((item.buildset || {}).changes || []).filter((id) => id !== c.id);
      const ahead = item.items_ahead || 0;   // a count, and item_ahead the one directly ahead
      let text = "not tested yet, " + (ahead.length === undefined ? ahead : ahead.length)
        + " ahead in the queue" + (item.item_ahead ? ", behind " + item.item_ahead : "");
      if (item.buildset && item.buildset.id && item.buildset.merge_state !== "PENDING") {
        text = held.length ? "tested on top of " + held.join(" + ") : "tested on the branch tip";
      }
      body.appendChild(el("div", "ahead muted", text));
    }
    const why = item.failing_reason || item.message;
    if (why) body.appendChild(el("div", "reason", why));
    const builds = el("ul", "builds");
    for (const job of item.jobs || []) builds.appendChild(renderBuild(job));
    body.appendChild(builds);
    li.appendChild(body);
    return li;
  }

  function renderQueue(pipeline, queue) {
    const dependent = pipeline.manager === "dependent";
    const box = el("div", "queue");
    box.dataset.queue = queue.name;
    const h = el("h3", null, queue.name);
    if (dependent) h.appendChild(el("span", "window muted", "window " + queue.window));
    box.appendChild(h);
    const list = el("ol", "items" + (dependent ? " chain" : ""));
    let hidden = 0;
    let seenActive = false;
    let marked = false;
    for (const item of queue.items) {
      if (!matches(item)) { hidden += 1; continue; }
      if (dependent && item.active) seenActive = true;
      if (dependent && seenActive && !item.active && !marked && !item.aside) {
        list.appendChild(el("li", "window-edge muted", "outside the window"));
        marked = true;
      }
      list.appendChild(renderItem(item, dependent));
    }
    box.appendChild(list);
    if (hidden) box.appendChild(el("p", "muted hidden-count", hidden + " hidden by the filter"));
    return box;
  }

  function renderPipeline(pipeline) {
    const section = el("section", "pipeline" + (pipeline.paused ? " paused" : ""));
    section.dataset.pipeline = pipeline.name;
    const h = el("h2", null, pipeline.name);
    h.appendChild(el("span", "manager muted", pipeline.manager));
    if (pipeline.paused) h.appendChild(el("span", "badge paused-badge", "paused"));
    const count = pipeline.queues.reduce((n, q) => n + q.items.length, 0);
    h.appendChild(el("span", "count muted", count + (count === 1 ? " item" : " items")));
    section.appendChild(h);
    if (pipeline.description) section.appendChild(el("p", "description muted", pipeline.description));
    for (const queue of pipeline.queues) section.appendChild(renderQueue(pipeline, queue));
    return section;
  }

  // --- alerts and recent -----------------------------------------------------------------

  // [text, severity] of each alert shown
  function alertsOf(data) {
    const out = [];
    if (fetchError) out.push(["status unavailable: " + fetchError + " (showing the last one)", "critical"]);
    // the server's open alerts (ccci_gate/alerts.py), then what only the page knows:
    // the pool's snapshot not answering, no Gearman server connected
    for (const a of data.alerts || []) out.push([a.message || JSON.stringify(a), a.severity || "warning"]);
    const pool = data.pool || {};
    if (pool.error) out.push(["Gearman: " + pool.error, "critical"]);
    else if (Array.isArray(pool.servers) && pool.servers.length === 0) out.push(["no Gearman server connected", "critical"]);
    return out;
  }

  function renderAlerts(data) {
    const box = document.getElementById("alerts");
    box.replaceChildren(...alertsOf(data).map(([text, severity]) =>
      el("div", "alert " + (severity === "critical" ? "critical" : "warning"), text)));
  }

  function renderRecent(recent) {
    const list = document.getElementById("recent");
    list.replaceChildren(...recent.filter((r) => matches({change: {
      id: r.project + (r.change_number !== null ? "#" + r.change_number : ""), project: r.project,
      number: r.change_number}})).map((r) => {
      const li = el("li", "recent result-" + (r.result || r.state));
      li.appendChild(el("span", "badge result", r.result || r.state));
      li.appendChild(link(r.status_url, r.project + (r.change_number !== null ? "#" + r.change_number : " " + (r.ref || "")), "change"));
      li.appendChild(el("span", "muted", " in " + r.pipeline + ", " + fmt(now() - r.finished_at) + " ago"));
      return li;
    }));
  }

  function render(data) {
    const t0 = performance.now();
    renderAlerts(data);
    const main = document.getElementById("pipelines");
    const frag = document.createDocumentFragment();
    let items = 0;
    for (const p of data.pipelines || []) {
      frag.appendChild(renderPipeline(p));
      items += p.queues.reduce((n, q) => n + q.items.length, 0);
    }
    if (!(data.pipelines || []).length) frag.appendChild(el("p", "muted", "no pipelines"));
    main.replaceChildren(frag);
    renderRecent(data.recent || []);
    void main.offsetHeight;   // lay it out, so the figure counts what a person waits for
    const ms = performance.now() - t0;
    window.ccciRender = {ms: ms, items: items, count: ((window.ccciRender || {}).count || 0) + 1};
    document.getElementById("updated").textContent =
      "updated " + new Date().toLocaleTimeString() + " · " + items + " items drawn in " + Math.round(ms) + " ms";
  }

  async function tick() {
    try {
      const response = await fetch("/status.json?compact=1", {cache: "no-store", headers: {Accept: "application/json"}});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      skew = (data.now || data.time || Date.now() / 1000) - Date.now() / 1000;
      fetchError = "";
      last = data;
      render(data);
    } catch (err) {
      fetchError = String(err.message || err);
      renderAlerts(last || {});
    } finally {
      setTimeout(tick, REFRESH_MS);
    }
  }

  const input = document.getElementById("filter");
  input.value = filter;
  input.addEventListener("input", () => {
    filter = input.value.trim();
    const url = filter ? "?q=" + encodeURIComponent(filter) : location.pathname;
    history.replaceState(null, "", url);
    if (last) render(last);
  });
  window.ccciRedraw = () => { if (last) render(last); };   // bench/status_page.py times it
  tick();
})();
