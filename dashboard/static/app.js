// The runs dashboard: a list of runs (#/) and a run page (#/runs/<id>), drawn from the app's
// JSON API (/api/dashboard/api/…); actions go through the app's HTTP API (/api/runs…).
// No framework, no build step. Every text from the API goes in with textContent, never as HTML.
"use strict";

(function () {
  const ROOT = location.pathname.replace(/\/dashboard\/?$/, ""); // "/api"
  const API = ROOT + "/dashboard/api";
  const ACTIVE_MS = 2000; // refresh while a run is active and young (offline runs take a minute)
  const SLOW_MS = 15000; // … and once it has run for more than YOUNG_S (a real fine-tune takes hours)
  const YOUNG_S = 600;
  const IDLE_MS = 10000; // the list, while no run is active
  const RETRY_MS = [2000, 5000, 15000, 30000]; // after an error the server may get over
  const KEY_STORE = "dashboard.functionKey";

  // The function key: taken from ?code= once, kept for this tab, removed from the address bar.
  const params = new URLSearchParams(location.search);
  if (params.has("code")) {
    sessionStorage.setItem(KEY_STORE, params.get("code"));
    params.delete("code");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
  }
  const key = sessionStorage.getItem(KEY_STORE);

  let timer = null;
  let generation = 0; // bumps at every navigation; late answers of an old view are dropped

  // ---------------------------------------------------------------------------- helpers

  function h(tag, attrs, ...children) {
    const svg = ["svg", "polyline", "line", "text", "g", "circle"].includes(tag);
    const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  class HttpError extends Error {
    constructor(status, body) {
      super(describe(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describe(status, body) {
    if (body && typeof body === "object" && body.error) {
      const details = (body.details || []).map((d) => `${d.field}: ${d.message}`).join("; ");
      return `HTTP ${status}: ${body.error}${details ? " (" + details + ")" : ""}`;
    }
    return `HTTP ${status}`;
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (key) headers["x-functions-key"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
    });
    const type = response.headers.get("Content-Type") || "";
    let parsed = null;
    if (type.includes("json")) parsed = await response.json().catch(() => null);
    else if (type.startsWith("image/")) parsed = await response.blob();
    else parsed = await response.text();
    if (response.status === 401 || response.status === 403) document.getElementById("key-note").hidden = false;
    return { status: response.status, body: parsed };
  }

  async function get(path) {
    const answer = await call("GET", path);
    if (answer.status !== 200) throw new HttpError(answer.status, answer.body);
    return answer.body;
  }

  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 0.1) return "< 0.1 s";
    if (seconds < 10) return `${seconds.toFixed(1)} s`;
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function score(value) {
    return typeof value === "number" ? value.toFixed(3) : "—";
  }

  function badge(state) {
    return h("span", { class: `badge ${state}`, "data-testid": "state" }, state.replaceAll("_", " "));
  }

  function showError(where, error) {
    where.replaceChildren(h("div", { class: "note error", role: "alert", "data-testid": "error" }, error.message || String(error)));
  }

  function schedule(fn, ms) {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  }

  // A refresh redraws the view: not while a person types in it.
  function refresh() {
    const focused = document.activeElement;
    if (focused && focused !== document.body && document.getElementById("view").contains(focused)
        && ["INPUT", "TEXTAREA"].includes(focused.tagName)) {
      schedule(refresh, ACTIVE_MS);
      return;
    }
    route();
  }

  let failures = 0;
  function retryAfter(error) {
    // Wrong input or no key will not get better by itself; anything else is retried, slower each time.
    if ([400, 401, 403].includes(error.status)) return setRefresh("not refreshing");
    const ms = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
    failures += 1;
    setRefresh(`retrying in ${ms / 1000} s`);
    schedule(refresh, ms);
  }

  function refreshEvery(ms, what) {
    failures = 0;
    setRefresh(`${what} · refreshing every ${ms / 1000} s`);
    schedule(refresh, ms);
  }

  function setRefresh(text) {
    document.querySelector("[data-testid=refresh-state]").textContent = text;
  }

  // ---------------------------------------------------------------------------- runs list

  async function showList(query) {
    const mine = generation;
    const view = document.getElementById("view");
    const state = query.get("state") || "";
    const page = Number(query.get("page") || "1");
    let data;
    try {
      data = await get(`${API}/runs?${new URLSearchParams({ page, per_page: 25, ...(state ? { state } : {}) })}`);
    } catch (error) {
      if (mine === generation) {
        showError(view, error);
        retryAfter(error);
      }
      return;
    }
    if (mine !== generation) return;
    const states = Object.keys(data.counts);

    const filter = h("select", { "aria-label": "Filter by status", "data-testid": "filter",
      onchange: (e) => { location.hash = `#/?state=${e.target.value}`; } },
    h("option", { value: "" }, `all (${Object.values(data.counts).reduce((a, b) => a + b, 0)})`),
    states.map((s) => h("option", { value: s, selected: s === state }, `${s.replaceAll("_", " ")} (${data.counts[s] || 0})`)));

    const rows = data.runs.map((run) => h("tr", { class: "row-link", "data-testid": "run-row", "data-run": run.id,
      onclick: () => { location.hash = `#/runs/${encodeURIComponent(run.id)}`; } },
    h("td", {}, badge(run.state)),
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.id)}` }, run.id), run.dry_run ? h("span", { class: "muted" }, " (dry run)") : null),
    h("td", { class: "text" }, run.dataset),
    h("td", { class: "hide-narrow" }, when(run.started_at)),
    h("td", { class: "num" }, duration(run.duration_s)),
    h("td", { class: "hide-narrow", "data-testid": "run-step" }, run.step || ""),
    h("td", { class: "num hide-narrow" }, `${score(run.new_score)} / ${score(run.live_score)}`)));

    const pager = h("div", { class: "toolbar" },
      h("button", { disabled: data.page <= 1, "data-testid": "prev",
        onclick: () => { location.hash = `#/?${new URLSearchParams({ state, page: data.page - 1 })}`; } }, "← Newer"),
      h("span", { "data-testid": "page" }, `page ${data.page} of ${data.pages} · ${data.total} runs`),
      h("button", { disabled: data.page >= data.pages, "data-testid": "next",
        onclick: () => { location.hash = `#/?${new URLSearchParams({ state, page: data.page + 1 })}`; } }, "Older →"));

    view.replaceChildren(h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h2", {}, "Runs"), filter,
        h("button", { onclick: () => route(), "data-testid": "reload" }, "Refresh")),
      data.runs.length
        ? h("div", { class: "scroll" }, h("table", { "data-testid": "runs" },
          h("thead", {}, h("tr", {}, h("th", {}, "Status"), h("th", {}, "Run"), h("th", {}, "Dataset"),
            h("th", { class: "hide-narrow" }, "Started"), h("th", {}, "Duration"),
            h("th", { class: "hide-narrow" }, "Step"), h("th", { class: "hide-narrow" }, "New / live score"))),
          h("tbody", {}, rows)))
        : h("p", { class: "muted", "data-testid": "empty" }, state ? "No run with this status." : "No runs yet: upload a dataset or POST /api/runs."),
      pager,
      data.truncated ? h("p", { class: "muted", "data-testid": "truncated" },
        "Only part of the task hub's runs could be listed; narrow the window (?days=) to see all of it.") : null));

    if (data.active > 0) {
      const young = data.runs.some((r) => ["running", "pending"].includes(r.state) && (r.duration_s ?? 0) < YOUNG_S);
      refreshEvery(young ? ACTIVE_MS : SLOW_MS, `${data.active} active`);
    } else {
      refreshEvery(IDLE_MS, "no active run"); // a run may start any time (an upload)
    }
  }

  // ---------------------------------------------------------------------------- run page

  function facts(pairs) {
    return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v]) => h("div", { "data-fact": k }, h("dt", {}, k), h("dd", {}, v))));
  }

  function timelineCard(run) {
    const now = Date.now();
    return h("section", { class: "card" }, h("h2", {}, "Steps"),
      h("ol", { class: "timeline", "data-testid": "timeline" }, run.timeline.map((row) => {
        let time = row.duration_s !== null ? duration(row.duration_s) : "";
        if (row.state === "active" && row.started_at) time = duration((now - new Date(row.started_at)) / 1000) + " so far";
        return h("li", { class: row.state, "data-testid": "stage", "data-stage": row.key, "data-state": row.state },
          h("span", { class: "dot", "aria-hidden": "true" }),
          h("span", {}, row.label, row.detail ? h("span", { class: "muted" }, ` — ${row.detail}`) : null,
            h("span", { class: "muted" }, ` (${row.state})`)),
          h("span", { class: "time" }, time));
      })));
  }

  function chart(loss) {
    const series = [["train", loss.train || []], ["validation", loss.validation || []]].filter(([, p]) => p.length);
    const all = series.flatMap(([, p]) => p);
    if (!all.length) return h("p", { class: "muted", "data-testid": "loss-empty" }, "No loss logged yet.");
    const W = 600, H = 260, L = 48, R = 12, T = 12, B = 28;
    const xs = all.map((p) => p.step), ys = all.map((p) => p.value);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0 || 1)) * (H - T - B);
    return h("div", {},
      h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "training loss", "data-testid": "loss-chart" },
        h("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
        h("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
        h("text", { x: 4, y: T + 10 }, y1.toFixed(3)), h("text", { x: 4, y: H - B }, y0.toFixed(3)),
        h("text", { x: L, y: H - 8 }, `step ${x0}`), h("text", { x: W - R - 60, y: H - 8 }, `step ${x1}`),
        series.map(([name, points]) => h("polyline", { class: name, "data-testid": `loss-${name}`, "data-points": points.length,
          points: points.map((p) => `${sx(p.step).toFixed(1)},${sy(p.value).toFixed(1)}`).join(" ") }))),
      h("div", { class: "legend" }, series.map(([name, points]) =>
        h("span", { class: name }, `${name === "train" ? "━ train" : "┅ validation"} (${points.length} points, last ${points[points.length - 1].value.toFixed(4)})`))));
  }

  function validationCard(run) {
    const errors = run.validation_errors || [];
    if (!errors.length && !run.examples.train) return null;
    return h("section", { class: "card", "data-testid": "validation" }, h("h2", {}, "Dataset"),
      facts([["Training examples", run.examples.train], ["Validation examples", run.examples.validation],
        ["Dataset", run.dataset], ["Validation file", run.validation_dataset]]),
      errors.length ? h("div", { class: "scroll" }, h("p", {}, `${errors.length} error(s) (the first ones):`),
        h("table", { "data-testid": "validation-errors" }, h("thead", {}, h("tr", {}, ["File", "Line", "Field", "Problem"].map((t) => h("th", {}, t)))),
          h("tbody", {}, errors.map((e) => h("tr", {}, h("td", {}, e.file || run.dataset), h("td", { class: "num" }, e.line),
            h("td", {}, h("code", {}, e.field || "(line)")), h("td", { class: "text" }, e.message)))))) : null);
  }

  function planCard(run) {
    const p = run.plan;
    if (!p) return null;
    return h("section", { class: "card", "data-testid": "plan" }, h("h2", {}, "Dry-run plan (nothing was created)"),
      facts([["Base model", p.model_id], ["Training SKU", p.training_instance_type],
        ["Serving SKU", `${p.serving_instance_type} × ${p.serving_instance_count}`],
        ["Training examples", p.train_examples], ["Validation examples", p.validation_examples],
        ["Training tokens", p.train_tokens], ["Epochs", p.epochs],
        ["Estimated GPU hours", p.estimated_gpu_hours], ["Endpoint", p.endpoint], ["New deployment", p.deployment],
        ["Replaces", p.replaces_deployment]]),
      h("p", { class: "muted" }, p.gpu_hours_basis),
      (p.checks || []).length ? h("ul", {}, p.checks.map((c) => h("li", {}, c.ok ? "✔ " : "✘ ", h("code", {}, c.name), ": ", c.detail))) : null);
  }

  function sortableTable(columns, rows, testid) {
    let sortKey = null, ascending = true;
    const tbody = h("tbody");
    const sortBy = (c) => {
      ascending = sortKey === c.key ? !ascending : true;
      sortKey = c.key;
      heads.forEach((th) => th.setAttribute("aria-sort", th.dataset.key === sortKey ? (ascending ? "ascending" : "descending") : "none"));
      draw();
    };
    const heads = columns.map((c) => h("th", { class: "sortable", "data-key": c.key, "aria-sort": "none", tabindex: 0,
      title: "sort by this column", onclick: () => sortBy(c),
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(c); } } }, c.label));
    function draw() {
      const sorted = [...rows];
      if (sortKey) {
        sorted.sort((a, b) => {
          const x = a[sortKey], y = b[sortKey];
          const order = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
          return ascending ? order : -order;
        });
      }
      tbody.replaceChildren(...sorted.map((r) => h("tr", { "data-testid": "example-row" },
        columns.map((c) => h("td", { class: c.numeric || c.count ? "num" : "text" }, c.numeric ? score(r[c.key]) : (r[c.key] ?? "—"))))));
    }
    draw();
    return h("div", { class: "scroll tall" }, h("table", { "data-testid": testid }, h("thead", {}, h("tr", {}, heads)), tbody));
  }

  function evaluationCard(run, report) {
    const e = run.evaluation;
    if (!e) return null;
    const examples = (report && report.evaluation_examples) || {};
    const byIndex = new Map();
    for (const [side, list] of Object.entries(examples)) {
      for (const ex of list || []) {
        const row = byIndex.get(ex.index) || { index: ex.index, prompt: ex.prompt, reference: ex.reference };
        row[`${side}_answer`] = ex.ok ? ex.answer : `(failed: ${ex.error || "error"})`;
        row[`${side}_score`] = ex.score;
        byIndex.set(ex.index, row);
      }
    }
    const rows = [...byIndex.values()];
    const columns = [{ key: "index", label: "#", count: true }, { key: "prompt", label: "Prompt" },
      { key: "reference", label: "Reference" }, { key: "new_answer", label: "New answer" },
      { key: "new_score", label: "New score", numeric: true }];
    if (e.live) columns.push({ key: "live_answer", label: "Live answer" }, { key: "live_score", label: "Live score", numeric: true });
    return h("section", { class: "card", "data-testid": "evaluation" }, h("h2", {}, "Evaluation"),
      facts([["Metric", e.metric], ["New score", h("span", { "data-testid": "new-score" }, score(e.new.score))],
        ["Live score", h("span", { "data-testid": "live-score" }, e.live ? score(e.live.score) : "no live model")],
        ["Threshold", `new ≥ live − ${e.tolerance} and new ≥ ${e.floor}`], ["Sample", `${e.sample_size} examples`],
        ["Verdict", h("span", { class: `verdict ${e.passed ? "pass" : "fail"}`, "data-testid": "verdict" }, e.passed ? "promoted" : "rejected")]]),
      h("p", { "data-testid": "verdict-reason" }, e.reason),
      rows.length ? sortableTable(columns, rows, "examples")
        : h("p", { class: "muted" }, report ? "The report holds no per-example scores." : "Per-example scores appear once the run report is written."));
  }

  function linksCard(run) {
    const items = [];
    const labels = { job: "Azure ML studio: job", model: "Azure ML studio: model", endpoint: "Azure ML studio: endpoint" };
    for (const [k, url] of Object.entries(run.links || {})) {
      items.push(h("li", {}, h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, labels[k] || k)));
    }
    if (run.model) items.push(h("li", {}, "Model ", h("code", {}, `${run.model.name}:${run.model.version}`)));
    if (run.endpoint) items.push(h("li", {}, "Endpoint ", h("code", {}, run.endpoint), run.deployment ? [" · deployment ", h("code", {}, run.deployment),
      run.state === "rejected_by_evaluation" ? " (deleted: the gate kept the live one)" : ""] : null));
    if (run.connection) items.push(h("li", {}, "Prompt flow connection ", h("code", {}, run.connection)));
    if (run.expires_at) items.push(h("li", {}, `Endpoint expires ${when(run.expires_at)} (cost guard)`));
    const reportBox = kept(run.id, "report", () => h("div", { "data-testid": "report-view" }));
    if (run.report) {
      items.push(h("li", {}, "Report folder ", h("code", {}, run.report), " — ",
        h("button", { "data-testid": "open-report", onclick: () => openReport(run, "report.md", reportBox) }, "report.md"), " ",
        h("button", { onclick: () => openReport(run, "loss.png", reportBox) }, "loss.png"), " ",
        h("button", { onclick: () => openReport(run, "summary.json", reportBox) }, "summary.json")));
    }
    if (!items.length) return null;
    return h("section", { class: "card", "data-testid": "links" }, h("h2", {}, "Links"), h("ul", {}, items), reportBox);
  }

  async function openReport(run, name, box) {
    const answer = await call("GET", `${API}/runs/${encodeURIComponent(run.id)}/report/${name}`);
    if (answer.status !== 200) return showError(box, new HttpError(answer.status, answer.body));
    box.querySelectorAll("img[src^='blob:']").forEach((img) => URL.revokeObjectURL(img.src));
    if (name === "loss.png") box.replaceChildren(h("img", { class: "loss", alt: "loss curve", src: URL.createObjectURL(answer.body) }));
    else box.replaceChildren(h("pre", { class: "report" }, typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body, null, 2)));
  }

  function shownAnswer(answer) {
    // What the API answered, without its management URLs (on Azure they carry the task hub's key).
    // A dry run that finished in time answers 200 with the run's summary itself.
    const b = answer.body && typeof answer.body === "object" ? answer.body : {};
    const out = { status: answer.status };
    if (answerId(answer)) out.id = answerId(answer);
    for (const k of ["runtimeStatus", "message", "error", "details"]) if (b[k] !== undefined) out[k] = b[k];
    const summary = b.instance_id ? b : b.output;
    if (summary && typeof summary === "object") out.output = { status: summary.status, reason: summary.reason, plan: summary.plan };
    return JSON.stringify(out, null, 2);
  }

  function answerId(answer) {
    const b = answer.body && typeof answer.body === "object" ? answer.body : {};
    return b.id || b.instance_id || null;
  }

  // Parts of the run page that a refresh must not redraw (what a person typed or opened).
  const keptParts = new Map();
  function kept(id, part, make) {
    const k = `${id}/${part}`;
    if (!keptParts.has(k)) keptParts.set(k, make());
    return keptParts.get(k);
  }

  function actionsCard(run) {
    const card = kept(run.id, "actions", () => makeActions(run));
    card.querySelector("[data-testid=cancel]").disabled = !run.can_cancel;
    return card;
  }

  function makeActions(run) {
    const answerBox = h("div", { class: "answer", "data-testid": "action-answer", hidden: true });
    const show = (answer) => { answerBox.hidden = false; answerBox.textContent = shownAnswer(answer); };
    const fail = (error) => { answerBox.hidden = false; answerBox.textContent = String(error); };
    const confirmBox = h("div", { class: "confirm", "data-testid": "cancel-confirm", hidden: true },
      h("p", {}, "Cancel this run? Its job is canceled and a deployment it created without traffic is deleted; live traffic stays as it is."),
      h("button", { class: "danger", "data-testid": "cancel-yes", onclick: async () => {
        confirmBox.hidden = true;
        try { show(await call("POST", `${ROOT}/runs/${encodeURIComponent(run.id)}/cancel`, { reason: "canceled from the dashboard" })); } catch (e) { fail(e); }
        schedule(refresh, 500);
      } }, "Yes, cancel the run"), " ",
      h("button", { onclick: () => { confirmBox.hidden = true; } }, "No"));
    const epochs = h("input", { type: "number", min: 1, max: 100, step: 1, name: "num_train_epochs", value: run.retrain.num_train_epochs ?? 1, "data-testid": "epochs" });
    const rate = h("input", { type: "number", min: 0, step: "any", name: "learning_rate", value: run.retrain.learning_rate ?? "", "data-testid": "learning-rate" });
    async function start(dryRun) {
      // The run's own overrides (endpoint, model, …) with the two values of the form.
      const overrides = { ...(run.retrain.overrides || {}) };
      const hyper = { ...(overrides.hyperparameters || {}) };
      if (epochs.value !== "") hyper.num_train_epochs = Number(epochs.value);
      if (rate.value !== "") hyper.learning_rate = Number(rate.value);
      overrides.hyperparameters = hyper;
      const body = { dataset: run.retrain.dataset, overrides, dry_run: dryRun };
      if (run.retrain.validation) body.validation = run.retrain.validation;
      answerBox.hidden = false;
      answerBox.textContent = dryRun ? "Planning (validation + preflight)…" : "Starting…";
      try {
        const answer = await call("POST", `${ROOT}/runs`, body);
        show(answer);
        const id = answerId(answer);
        if (id && [200, 202, 409].includes(answer.status)) {
          answerBox.append(" ", h("a", { href: `#/runs/${encodeURIComponent(id)}`, "data-testid": "new-run-link" }, `open ${id}`));
        }
      } catch (e) { fail(e); }
    }
    return h("section", { class: "card", "data-testid": "actions" }, h("h2", {}, "Actions"),
      h("div", { class: "toolbar" },
        h("button", { class: "danger", disabled: !run.can_cancel, "data-testid": "cancel", onclick: () => { confirmBox.hidden = false; } }, "Cancel run")),
      confirmBox,
      run.retrain.dataset && run.retrain.overrides === null
        ? h("p", { class: "muted", "data-testid": "no-retrain" }, "This run was started before runs recorded their overrides: start a retrain with POST /api/runs, naming its endpoint and model.")
        : null,
      run.retrain.dataset && run.retrain.overrides !== null ? h("form", { class: "retrain", onsubmit: (e) => { e.preventDefault(); start(false); } },
        h("label", {}, "Epochs", epochs), h("label", {}, "Learning rate", rate),
        h("button", { class: "primary", type: "submit", "data-testid": "retrain" }, "Retrain this dataset"),
        h("button", { type: "button", "data-testid": "dry-run", onclick: () => start(true) }, "Dry run")) : null,
      answerBox);
  }

  const lossCache = { key: null, value: null };

  // The job now (the loss answer reads it) with its progress, else what the run last read.
  function jobStatus(run, loss) {
    const now = loss && !loss.error ? loss : null;
    const state = (now && now.state) || run.job.status || "—";
    const m = (now && now.metrics) || {};
    const parts = [state];
    if (state === "Running" && m.step !== undefined && m.total_steps) parts.push(`step ${m.step}/${m.total_steps}`);
    if (state === "Running" && typeof m.train_loss === "number") parts.push(`loss ${m.train_loss.toFixed(3)}`);
    return parts.join(" · ");
  }

  async function showRun(id) {
    const mine = generation;
    const view = document.getElementById("view");
    let run;
    try {
      run = await get(`${API}/runs/${encodeURIComponent(id)}`);
    } catch (error) {
      if (mine !== generation) return;
      showError(view, error);
      if (error.status === 404) { // a run just uploaded may not exist yet
        setRefresh("retrying every 5 s");
        schedule(refresh, 5000);
      } else {
        retryAfter(error);
      }
      return;
    }
    const live = run.state === "running" || run.state === "pending";
    // The loss is read again only while it can change (the job trains) or once its run ended.
    const lossKey = `${id}/${run.step}/${live}`;
    const [loss, report] = await Promise.all([
      !run.job.name ? null
        : lossCache.key === lossKey && run.step !== "training" ? lossCache.value
          : get(`${API}/runs/${encodeURIComponent(id)}/loss`).catch((e) => ({ error: e })),
      run.report && run.evaluation ? get(`${API}/runs/${encodeURIComponent(id)}/report/summary.json`).catch(() => null) : null,
    ]);
    if (mine !== generation) return;
    if (loss && !loss.error) Object.assign(lossCache, { key: lossKey, value: loss });
    const lossCard = run.job.name ? h("section", { class: "card", "data-testid": "loss" },
      h("h2", {}, "Training loss", run.step === "training" ? h("span", { class: "muted" }, " (live)") : null),
      loss && loss.error ? h("p", { class: "muted" }, loss.error.message) : chart(loss || {})) : null;
    const head = h("section", { class: "card" },
      h("div", { class: "toolbar" }, badge(run.state), h("h2", { "data-testid": "run-id" }, run.id), run.dry_run ? h("span", { class: "muted" }, "dry run") : null),
      run.reason ? h("p", { "data-testid": "reason" }, run.reason) : null,
      facts([["Dataset", run.dataset], ["Started", when(run.started_at)], ["Duration", duration(run.duration_s)],
        ["Current step", live ? run.step : null], ["Job", run.job.name],
        ["Job status", h("span", { "data-testid": "job-status" }, jobStatus(run, loss))],
        ["Started by", run.source], ["Real run id", run.real_run_id]]));
    view.replaceChildren(...[
      h("p", {}, h("a", { href: "#/", "data-testid": "back" }, "← All runs")),
      head,
      h("div", { class: "grid2" }, timelineCard(run), h("div", {}, lossCard, validationCard(run))),
      planCard(run),
      evaluationCard(run, report),
      linksCard(run),
      actionsCard(run)].filter(Boolean));
    if (live) {
      refreshEvery((run.duration_s ?? 0) < YOUNG_S ? ACTIVE_MS : SLOW_MS, "run active");
    } else {
      setRefresh("run ended");
    }
  }

  // ---------------------------------------------------------------------------- routing

  function route(event) {
    clearTimeout(timer);
    generation += 1;
    if (event && event.type === "hashchange") keptParts.clear();
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const match = path.match(/^\/runs\/([^/]+)$/);
    if (match) showRun(decodeURIComponent(match[1]));
    else showList(new URLSearchParams(query || ""));
  }

  window.addEventListener("hashchange", route);
  route();
})();
