// The RecLoop dashboard: polls the API's own JSON routes (relative URLs, so it works under any stage path) and
// draws them with uPlot. Nothing is loaded from another host.
"use strict";

(() => {
  const REFRESH_MS = 15000;
  const COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#eeca3b"];
  const KEY_STORE = "recloop.dashboard.apiKey";
  const TOKEN_STORE = "recloop.dashboard.token";
  const CONVERSION_STORE = "recloop.dashboard.conversion";
  const RUNNING_EXPERIMENTS = new Set(["running", "rolling_out"]);
  const charts = {};
  let refreshes = 0;
  let chosenEndpoint = null; // the operator's pick; until then the recommend route, once it has traffic

  // ---- small helpers ---------------------------------------------------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const $ = (selector, root = document) => root.querySelector(selector);
  const fixed = (value, digits) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
  const percent = (value) => (value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`);
  const count = (value) => (value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US"));
  const seconds = (iso) => Date.parse(iso) / 1000;

  function when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  function tile(label, value, extra) {
    return el("div", { class: "tile" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), extra);
  }

  function table(headers, rows) {
    const head = el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : null }, h.label || h)));
    const body = rows.map((cells) =>
      el("tr", {}, cells.map((cell, i) => el("td", { class: headers[i].num ? "num" : cell?.cls }, cell?.text ?? cell)))
    );
    return el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
  }

  const tagged = (text, cls) => ({ text: text ?? "–", cls: cls ?? text });
  const empty = (text) => el("p", { class: "empty" }, text);

  function fill(root, ...children) {
    root.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  // ---- the API ---------------------------------------------------------------------------------------------------

  async function get(path) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    const token = sessionStorage.getItem(TOKEN_STORE);
    if (key) headers["x-api-key"] = key;
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const response = await fetch(path, { headers, cache: "no-store", credentials: "same-origin" });
      let body = null;
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
      return { ok: response.ok, status: response.status, body, path };
    } catch (error) {
      return { ok: false, status: 0, body: { message: String(error) }, path };
    }
  }

  // What a section says when its route did not answer with data: plainly, and what to do about it.
  function problem(section, reply) {
    const line = $(".problem", section);
    if (reply.ok) {
      line.hidden = true;
      return false;
    }
    let text;
    if (reply.status === 401 || reply.status === 403) {
      text = `${reply.path} needs credentials on this stack: set an API key and an operator token (scope service) under Credentials.`;
    } else if (reply.status === 404) {
      text = `Not built on this stack: ${reply.path} does not exist here.`;
    } else {
      const message = reply.body && (reply.body.message || reply.body.error);
      text = `${reply.path} is unavailable (${reply.status || "no answer"})${message ? `: ${message}` : ""}.`;
    }
    line.textContent = text;
    line.hidden = false;
    return true;
  }

  // ---- charts ----------------------------------------------------------------------------------------------------

  // One uPlot per chart name; `series` is [{label, values, dots}] over the shared `xs` (epoch seconds). A chart
  // without any value says so instead of drawing empty axes. Its container carries data-points for the tests.
  function draw(name, xs, series, { yLabel = "", note = "no data yet" } = {}) {
    const container = $(`[data-chart="${name}"]`);
    const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null && v !== undefined).length, 0);
    container.dataset.points = String(points);
    const signature = series.map((s) => s.label).join("|");
    if (!points) {
      if (charts[name]) charts[name].plot.destroy();
      delete charts[name];
      fill(container, empty(note));
      return;
    }
    const data = [xs, ...series.map((s) => s.values)];
    if (charts[name] && charts[name].signature === signature) {
      charts[name].plot.setData(data);
      return;
    }
    if (charts[name]) charts[name].plot.destroy();
    fill(container);
    const options = {
      width: Math.max(container.clientWidth, 320),
      height: 220,
      scales: { x: { time: true, range: timeRange } },
      axes: [{}, { label: yLabel, size: 60 }],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 2,
          spanGaps: false,
          points: { show: true, size: s.dots ? 7 : 4, space: s.dots ? 0 : 30 },
          paths: s.dots ? () => null : undefined,
        })),
      ],
    };
    charts[name] = { signature, plot: new uPlot(options, data, container) };
  }

  // The x range from the data itself: uPlot pads a single time point to years before a range function sees it.
  // One point alone gets five minutes either side.
  function timeRange(u) {
    const xs = u.data[0].filter((x) => x != null);
    if (!xs.length) return [0, 1];
    const low = Math.min(...xs);
    const high = Math.max(...xs);
    return low === high ? [low - 300, high + 300] : [low, high];
  }

  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(charts)) {
      const width = Math.max($(`[data-chart="${name}"]`).clientWidth, 320);
      chart.plot.setSize({ width, height: 220 });
    }
  });

  // ---- sections --------------------------------------------------------------------------------------------------

  function renderHealth(reply) {
    const badge = $("#health");
    const status = reply.ok || reply.status === 503 ? reply.body.status : "unknown";
    badge.className = `badge ${status}`;
    badge.textContent = `health: ${status}`;
    if (reply.body && reply.body.components) {
      const parts = Object.entries(reply.body.components).map(([name, c]) => `${name} ${c.status}`);
      badge.title = `${parts.join(", ")}; version ${reply.body.version}`;
    }
  }

  function renderTraffic(reply) {
    const section = $("#traffic");
    if (problem(section, reply)) return;
    const m = reply.body;
    fill(
      $(".tiles", section),
      tile("events", count(m.events_total)),
      Object.entries(m.events).map(([type, n]) => tile(type, count(n))),
      tile("recommendations", count(m.recommendations_total)),
      tile("cold-start rate", percent(m.cold_start_rate)),
      tile("cache hit rate", percent(m.cache_hit_rate))
    );
    const history = m.history;
    const select = $("#endpoint");
    const endpoints = Object.keys(history.latency);
    const fallback = endpoints.includes("POST /api/v1/recommend") ? "POST /api/v1/recommend" : endpoints[0];
    const chosen = endpoints.includes(chosenEndpoint) ? chosenEndpoint : fallback;
    fill(select, endpoints.map((e) => el("option", { value: e }, e)));
    if (chosen) select.value = chosen;
    const latency = history.latency[chosen] || { p50_ms: [], p95_ms: [], p99_ms: [] };
    draw(
      "latency",
      history.minutes,
      [
        { label: "p50", values: latency.p50_ms },
        { label: "p95", values: latency.p95_ms },
        { label: "p99", values: latency.p99_ms },
      ],
      { yLabel: "ms", note: "No request in the last hour." }
    );
    const perMinute = Object.entries(history.events).map(([type, values]) => ({
      label: type,
      values: values.every((v) => v === 0) ? values.map(() => null) : values,
    }));
    draw("events", history.minutes, perMinute, { yLabel: "events / min", note: "No event in the last hour." });
    const rows = Object.entries(m.latency).map(([endpoint, s]) => [
      endpoint,
      count(s.count),
      fixed(s.p50_ms, 1),
      fixed(s.p95_ms, 1),
      fixed(s.p99_ms, 1),
    ]);
    const headers = ["endpoint", { label: "requests (hour)", num: true }, { label: "p50 ms", num: true }];
    headers.push({ label: "p95 ms", num: true }, { label: "p99 ms", num: true });
    fill($(".latency", section), rows.length ? table(headers, rows) : null);
  }

  function renderOnline(reply) {
    const section = $("#online");
    if (problem(section, reply)) return;
    const s = reply.body;
    const used = Math.min(1, s.buffer_utilization || 0);
    const filled = el("div");
    filled.style.width = `${(100 * used).toFixed(1)}%`; // a style attribute would need 'unsafe-inline'
    const bar = el("div", { class: "bar" }, filled);
    fill(
      $(".tiles", section),
      tile("updates", count(s.total_updates)),
      tile("published", count(s.published)),
      tile("rolled back", count(s.rollbacks)),
      tile("buffer", `${count(s.buffer_size)} / ${count(s.buffer_capacity)}`, bar),
      tile("avg update", s.avg_update_time_ms === null ? "–" : `${fixed(s.avg_update_time_ms, 0)} ms`),
      tile("avg held-out error", fixed(s.avg_prediction_error, 4)),
      tile("serving", s.current_version || "–"),
      tile("update running", s.update_running ? "yes" : "no")
    );
    const updates = [...(s.recent_updates || [])].reverse(); // oldest first, for the chart
    const xs = updates.map((u) => seconds(u.at));
    const published = (u) => u.outcome === "published";
    draw(
      "held-out-error",
      xs,
      [
        { label: "before", values: updates.map((u) => u.error_before), dots: true },
        { label: "after, published", values: updates.map((u) => (published(u) ? u.error_after : null)), dots: true },
        { label: "after, rolled back", values: updates.map((u) => (published(u) ? null : u.error_after)), dots: true },
      ],
      { yLabel: "held-out error", note: "No update has judged a model yet." }
    );
    const rows = (s.recent_updates || []).slice(0, 8).map((u) => [
      when(u.at),
      tagged(u.outcome),
      count(u.events),
      `${fixed(u.error_before, 4)} → ${fixed(u.error_after, 4)}`,
      u.version || "–",
    ]);
    const headers = ["at", "outcome", { label: "events", num: true }, "held-out error", "published"];
    fill($(".updates", section), rows.length ? table(headers, rows) : null);
  }

  function renderModels(reply) {
    const section = $("#models");
    if (problem(section, reply)) return;
    const { champion, models, champion_history: changes } = reply.body;
    const byVersion = new Map(models.map((m) => [m.version, m]));
    if (!champion) {
      fill($(".champion", section), empty(`No champion yet (${models.length} registered versions).`));
    } else {
      const meta = byVersion.get(champion.version);
      fill(
        $(".champion", section),
        el("div", {}, "champion ", el("span", { id: "champion-version", class: "version" }, champion.version)),
        el(
          "div",
          { class: "muted" },
          `${meta ? meta.kind : "?"} · promoted ${when(champion.promoted_at)} · ${champion.reason || "no reason given"}`,
          champion.previous_version ? ` · before it: ${champion.previous_version}` : "",
          ` · ${models.length} registered versions`
        )
      );
    }
    const lineage = [];
    for (let version = champion && champion.version; version && lineage.length < 12; ) {
      const meta = byVersion.get(version);
      lineage.push(
        el(
          "li",
          {},
          el("strong", {}, version),
          meta ? ` ${meta.kind}, created ${when(meta.created_at)}` : " (no longer in the registry)"
        )
      );
      version = meta ? meta.parent_version : null;
    }
    fill($(".lineage", section), lineage.length ? lineage : el("li", { class: "empty" }, "no champion"));
    const rows = (changes || []).map((c) => [when(c.promoted_at), c.action, c.version, c.previous_version || "–", c.reason]);
    const headers = ["at", "action", "to", "from", "reason"];
    fill($(".changes", section), rows.length ? table(headers, rows) : empty("No champion change recorded."));
  }

  function conversionHistory() {
    try {
      return JSON.parse(sessionStorage.getItem(CONVERSION_STORE)) || {};
    } catch (_) {
      return {};
    }
  }

  async function renderExperiments(reply) {
    const section = $("#experiments");
    if (problem(section, reply)) return;
    const running = reply.body.experiments.filter((e) => RUNNING_EXPERIMENTS.has(e.status));
    const results = await Promise.all(running.map((e) => get(`mlops/experiments/${encodeURIComponent(e.experiment_id)}`)));
    const history = conversionHistory();
    const now = Date.now() / 1000;
    const blocks = results.map((r, i) => {
      if (!r.ok) return el("p", { class: "problem" }, `${running[i].name}: results unavailable (${r.status}).`);
      const x = r.body;
      const total = x.variants.reduce((n, v) => n + v.impressions, 0);
      const samples = (history[x.experiment_id] = history[x.experiment_id] || []);
      samples.push({ t: now, rates: Object.fromEntries(x.variants.map((v) => [v.name, v.conversion_rate])) });
      if (samples.length > 240) samples.splice(0, samples.length - 240);
      const rows = x.variants.map((v) => [
        v.name,
        v.model_version,
        count(v.impressions),
        percent(total ? v.impressions / total : 0),
        count(v.conversions),
        `${percent(v.conversion_rate)} [${percent(v.interval_low)}, ${percent(v.interval_high)}]`,
        v.probability_best === null ? "–" : percent(v.probability_best),
      ]);
      const headers = ["variant", "model version", { label: "impressions", num: true }, { label: "share", num: true }];
      headers.push({ label: "conversions", num: true }, "conversion rate [95%]", { label: "P(best)", num: true });
      const decision = x.winning_variant ? `winner: ${x.winning_variant}` : "no winner yet";
      return el(
        "div",
        { class: "experiment" },
        el("h3", {}, `${x.name} · ${x.status} · ${x.allocation_strategy} · ${x.traffic_percentage}% of users`),
        table(headers, rows),
        el("div", { class: "muted" }, `${decision} (${x.reason})`)
      );
    });
    sessionStorage.setItem(CONVERSION_STORE, JSON.stringify(history));
    fill($(".running", section), blocks.length ? blocks : empty("No experiment is running."));
    $("figure", section).hidden = !blocks.length;
    const series = [];
    const xs = [];
    for (const x of results.filter((r) => r.ok).map((r) => r.body)) {
      for (const sample of history[x.experiment_id] || []) xs.push(sample.t);
    }
    xs.sort((a, b) => a - b);
    for (const x of results.filter((r) => r.ok).map((r) => r.body)) {
      const samples = new Map((history[x.experiment_id] || []).map((s) => [s.t, s.rates]));
      for (const v of x.variants) {
        const label = running.length > 1 ? `${x.name}: ${v.name}` : v.name;
        series.push({ label, values: xs.map((t) => (samples.has(t) ? samples.get(t)[v.name] ?? null : null)), dots: true });
      }
    }
    draw("conversion", xs, series, { yLabel: "conversion rate", note: "No experiment is running." });
  }

  function renderDrift(reply) {
    const section = $("#drift");
    if (problem(section, reply)) return;
    const { latest, history } = reply.body;
    $(".charts", section).hidden = !latest;
    if (!latest) {
      fill($(".summary", section), empty("No drift check has run yet."));
      draw("drift-score", [], []);
      return;
    }
    fill(
      $(".summary", section),
      el(
        "p",
        {},
        el("strong", { class: latest.drifted ? "drifted" : "stable" }, latest.drifted ? "drifted" : "no drift"),
        ` · score ${fixed(latest.drift_score, 3)} · checked ${when(latest.checked_at)} · traffic of ${latest.model_version}`,
        ` against ${latest.reference_version} · threshold ${latest.threshold} (adjusted p)`
      )
    );
    const checks = [...history].reverse();
    draw("drift-score", checks.map((c) => seconds(c.checked_at)), [
      { label: "drift score", values: checks.map((c) => c.drift_score), dots: true },
    ]);
    const rows = latest.features.map((f) => [
      f.feature,
      f.source,
      f.test === "kolmogorov_smirnov" ? "KS" : "chi²",
      fixed(f.adjusted_p_value, 4),
      `${fixed(f.effect, 3)} (floor ${fixed(f.effect_floor, 2)})`,
      count(f.window_size),
      tagged(f.verdict),
    ]);
    const headers = ["feature", "stream", "test", { label: "adjusted p", num: true }, "effect", { label: "window", num: true }];
    headers.push("verdict");
    fill($(".features", section), table(headers, rows));
  }

  function renderRetraining(reply) {
    const section = $("#retraining");
    if (problem(section, reply)) return;
    const s = reply.body;
    const m = s.metrics;
    fill(
      $(".tiles", section),
      tile("retraining now", s.retraining_in_progress ? "yes" : "no"),
      tile("last retrain", when(s.last_retrain_time)),
      tile("new interactions since", count(s.new_interactions_since_retrain)),
      tile("last drift score", fixed(s.last_drift_score, 3)),
      tile("retrains", count(m.total_retrains)),
      tile("failed", count(m.failed_retrains)),
      tile(
        "by trigger",
        `${m.manual_retrains} manual · ${m.drift_triggered_retrains} drift · ${m.performance_triggered_retrains} perf · ` +
          `${m.volume_triggered_retrains} volume · ${m.scheduled_retrains} schedule`
      )
    );
    const run = s.last_run;
    if (!run) {
      fill($(".last-run", section), empty("No retrain has run yet."));
    } else {
      const execution = s.execution;
      fill(
        $(".last-run", section),
        el("h3", {}, "Last run"),
        el(
          "p",
          {},
          el("strong", {}, run.execution_name),
          ` · ${run.trigger} · `,
          el("span", { class: run.outcome }, run.outcome),
          ` · started ${when(run.started_at)}`,
          run.finished_at ? ` · finished ${when(run.finished_at)}` : "",
          run.error ? ` · ${run.error}` : ""
        ),
        execution
          ? el(
              "p",
              {},
              "state machine: ",
              el("span", { class: execution.status, id: "execution-status" }, execution.status),
              execution.current_step ? ` at ${execution.current_step} · ` : " · ",
              el("a", { href: execution.console_url, rel: "noreferrer", target: "_blank" }, "console")
            )
          : el("p", { class: "muted" }, "state machine: no execution to show")
      );
    }
    const rows = (s.recent_runs || []).map((r) => [
      r.execution_name,
      r.trigger,
      tagged(r.outcome),
      when(r.started_at),
      when(r.finished_at),
      r.error || "",
    ]);
    const headers = ["execution", "trigger", "outcome", "started", "finished", "error"];
    fill($(".runs", section), rows.length ? [el("h3", {}, "Finished runs"), table(headers, rows)] : null);
  }

  // ---- the loop --------------------------------------------------------------------------------------------------

  async function refresh() {
    const [health, metrics, online, models, experiments, drift, retraining] = await Promise.all([
      get("health"),
      get("metrics?history=true"),
      get("mlops/online-learning/status"),
      get("mlops/models?history=10"),
      get("mlops/experiments"),
      get("mlops/drift"),
      get("mlops/retrain/status"),
    ]);
    renderHealth(health);
    renderTraffic(metrics);
    renderOnline(online);
    renderModels(models);
    await renderExperiments(experiments);
    renderDrift(drift);
    renderRetraining(retraining);
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    $("#refreshed").textContent = `updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
  }

  let timer = null;
  function schedule() {
    clearTimeout(timer);
    refresh().finally(() => {
      timer = setTimeout(schedule, REFRESH_MS);
    });
  }

  $("#refresh").addEventListener("click", schedule);
  $("#endpoint").addEventListener("change", () => {
    chosenEndpoint = $("#endpoint").value;
    schedule();
  });
  $("#credentials-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("#api-key").value.trim());
    sessionStorage.setItem(TOKEN_STORE, $("#token").value.trim());
    schedule();
  });
  $("#forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    sessionStorage.removeItem(TOKEN_STORE);
    $("#api-key").value = "";
    $("#token").value = "";
    schedule();
  });
  $("#api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("#token").value = sessionStorage.getItem(TOKEN_STORE) || "";
  schedule();
})();
