// mmsr inspect: the page. Plain JavaScript, no libraries, nothing loaded from elsewhere.
// Every string that comes from a run (model output, web text, ids) is put in as a text node
// (el() below), never as HTML; links are made only from http(s) urls.
"use strict";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const PAGE = 100;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "onclick" || key === "onchange" || key === "onsubmit") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// main.replaceChildren, leaving out the parts not shown (null, false)
function show(...parts) {
  main.replaceChildren(...parts.flat().filter((x) => x !== null && x !== undefined && x !== false));
}

function safeUrl(url) {
  return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
}

function link(url, text) {
  const safe = safeUrl(url);
  return safe ? el("a", { href: safe, target: "_blank", rel: "noopener noreferrer" }, text || url)
    : el("span", {}, text || url || "");
}

function hash(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== null && v !== undefined && v !== "") query.append(key, v);
    }
  }
  const text = query.toString();
  return "#/" + path + (text ? "?" + text : "");
}

async function api(path, params) {
  const response = await fetch("/api/" + path + hash("", params).slice(2));
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return response.json();
}

function imageUrl(run, name) {
  return "/api/image?" + new URLSearchParams({ run, name }).toString();
}

function pct(x) { return typeof x === "number" ? (100 * x).toFixed(1) + " %" : "–"; }
function num(x, digits = 3) { return typeof x === "number" ? x.toFixed(digits) : "–"; }
function verdict(c) {
  return c === true ? el("span", { class: "ok" }, "✓") : c === false ? el("span", { class: "wrong" }, "✗")
    : el("span", { class: "muted" }, "?");
}

function setCrumbs(...items) {
  crumbs.replaceChildren(...items.map(([text, href]) => el("a", { href }, text)));
}

// --- metrics and counts ---

const METRIC_KEYS = ["n", "accuracy_judge", "accuracy_em", "search_ratio", "image_only_ratio",
  "text_only_ratio", "both_ratio", "mean_turns", "failed_questions",
  "reward/mean", "search/ratio", "rollout/turns", "loss/total"];

function metricCards(metrics) {
  const overall = (metrics && metrics.overall) || {};
  const keys = METRIC_KEYS.filter((k) => typeof overall[k] === "number");
  const cards = keys.map((k) => el("div", { class: "card" },
    el("b", {}, k === "n" || k.startsWith("failed") ? overall[k]
      : k.includes("ratio") || k.startsWith("accuracy") ? pct(overall[k]) : num(overall[k])),
    el("span", {}, k)));
  // a damaged metrics file: say so rather than show nothing
  return metrics && typeof metrics.note === "string"
    ? [...cards, el("span", { class: "muted", "data-note": "metrics" }, metrics.note)] : cards;
}

function countCards(c, label) {
  const cards = [["lines", c.n], ["correct", c.correct], ["wrong", c.wrong], ["searched", c.searched],
    ["image only", c.tools.image], ["text only", c.tools.text], ["both", c.tools.both],
    ["mean reward", num(c.mean_reward)], ["failed", c.failed], ["bad lines", c.bad]];
  return el("div", { class: "cards", "data-counts": label },
    cards.map(([k, v]) => el("div", { class: "card" }, el("b", {}, v), el("span", {}, k))));
}

// --- views ---

async function home() {
  setCrumbs();
  const data = await api("runs");
  const rows = data.runs.map((r) => {
    const o = (r.metrics && r.metrics.overall) || {};
    return el("tr", {},
      el("td", {}, el("input", { type: "checkbox", value: r.key, "data-run": r.key })),
      el("td", {}, el("a", { href: hash("run", { run: r.key }) }, r.name)),
      el("td", {}, r.kind), el("td", { class: "num" }, (r.bytes / 1024).toFixed(0) + " KB"),
      el("td", { class: "num" }, pct(o.accuracy_judge ?? o.accuracy_em)),
      el("td", { class: "num" }, pct(o.search_ratio ?? o["search/ratio"])));
  });
  const compareButton = el("button", { id: "compare", onclick: () => {
    const chosen = [...main.querySelectorAll("input[data-run]:checked")].map((x) => x.value);
    if (chosen.length < 2) { alert("choose two runs or more"); return; }
    location.hash = hash("compare", { run: chosen });
  } }, "Side by side");
  show(
    el("h1", {}, "Runs"),
    el("p", { class: "muted" }, "Serving: ", data.roots.join(", ")),
    el("table", {}, el("thead", {}, el("tr", {}, ["", "run", "kind", "size", "accuracy", "search ratio"]
      .map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    el("p", {}, compareButton, " ", el("span", { class: "muted" }, "the chosen runs' questions side by side")),
    data.trainings.length ? el("h2", {}, "Training folders") : null,
    el("ul", {}, data.trainings.map((t) => el("li", {},
      el("a", { href: hash("training", { key: t.key }) }, t.path), ` (${t.steps.length} steps)`))));
}

const FILTERS = ["correct", "searched", "tools", "category", "need", "end_reason", "reward_min",
  "reward_max", "text", "bad"];

function select(name, value, options) {
  return el("label", {}, name.replace("_", " "), el("select", { name },
    options.map(([v, text]) => el("option", { value: v, selected: v === (value || "") }, text))));
}

function filterForm(params, facets) {
  const choices = (name) => [["", "any"], ...Object.entries(facets[name] || {})
    .map(([v, n]) => [v, `${v === "" ? "(none)" : v} (${n})`])];
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const values = { run: params.get("run") };
    for (const [k, v] of new FormData(form).entries()) if (v !== "") values[k] = v;
    location.hash = hash("run", values);
  } },
  select("correct", params.get("correct"), [["", "any"], ["true", "correct"], ["false", "wrong"]]),
  select("searched", params.get("searched"), [["", "any"], ["true", "searched"], ["false", "not searched"]]),
  select("tools", params.get("tools"), [["", "any"], ["none", "none"], ["image", "image only"],
    ["text", "text only"], ["both", "both"]]),
  select("category", params.get("category"), choices("category")),
  select("need", params.get("need"), choices("need")),
  select("end_reason", params.get("end_reason"), choices("end_reason")),
  el("label", {}, "reward ≥", el("input", { type: "number", step: "any", name: "reward_min", value: params.get("reward_min") })),
  el("label", {}, "reward ≤", el("input", { type: "number", step: "any", name: "reward_max", value: params.get("reward_max") })),
  el("label", {}, "question, id or answer", el("input", { type: "search", name: "text", value: params.get("text") })),
  select("bad", params.get("bad"), [["", "all lines"], ["true", "bad lines only"]]),
  el("button", { type: "submit" }, "Filter"),
  el("a", { href: hash("run", { run: params.get("run") }) }, "clear"));
  for (const s of form.querySelectorAll("select")) s.onchange = () => form.requestSubmit();
  return form;
}

function pager(total, offset, limit, go) {
  const last = Math.min(total, offset + limit);
  return el("div", { class: "pager" },
    el("button", { disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, "← previous"),
    el("span", {}, total ? `${offset + 1}–${last} of ${total}` : "nothing matches"),
    el("button", { disabled: last >= total, onclick: () => go(offset + limit) }, "next →"));
}

function rowCells(run, r) {
  if (r.bad) {
    return [el("td", { class: "num" }, r.line), el("td", { colspan: 8 },
      el("span", { class: "error" }, "bad line: ", r.bad), " ", el("code", {}, r.question))];
  }
  return [el("td", { class: "num" }, r.line), el("td", {}, r.id), el("td", {}, r.question),
    el("td", {}, r.answer ?? ""), el("td", {}, r.golds.join(" | ")), el("td", {}, verdict(r.correct)),
    el("td", {}, r.tools === "none" ? "" : r.tools), el("td", { class: "num" }, num(r.reward, 2)),
    el("td", {}, r.end_reason)];
}

async function runList(params) {
  const run = params.get("run");
  const offset = Number(params.get("offset") || 0);
  const query = { run, offset, limit: PAGE };
  for (const k of FILTERS) if (params.get(k)) query[k] = params.get(k);
  const data = await api("list", query);
  setCrumbs([data.run.name, hash("run", { run })]);
  const go = (o) => { location.hash = hash("run", { ...query, limit: null, offset: o }); };
  const rows = data.items.map((r) => el("tr", {
    class: r.bad ? "click badline" : "click", "data-line": r.line,
    onclick: () => { location.hash = hash("t", { run, line: r.line }); } }, rowCells(run, r)));
  show(
    el("h1", {}, data.run.name), el("div", { class: "cards metrics" }, metricCards(data.metrics)),
    countCards(data.counts, "all"),
    data.matched ? el("p", { class: "muted" }, "Matching the filters:") : null,
    data.matched ? countCards(data.matched, "matched") : null,
    filterForm(params, data.facets), pager(data.total, offset, PAGE, go),
    el("table", { id: "rows" }, el("thead", {}, el("tr", {}, ["line", "id", "question", "answer", "golds", "",
      "tools", "reward", "end"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    pager(data.total, offset, PAGE, go));
}

function pieces(run, list) {
  return el("div", { class: "text" }, list.map((p) => {
    if (p.kind === "image") {
      return p.image ? el("img", { class: "thumb", src: imageUrl(run, p.image), alt: "image" })
        : el("span", { class: "muted" }, "[image not saved]");
    }
    if (p.kind === "action") return el("mark", { class: "action" }, p.text);
    return el("span", { class: p.kind === "reason" ? "reason" : null }, p.text);
  }));
}

function hitView(run, hit) {
  return el("div", { class: "hit" },
    hit.thumbnail ? el("img", { class: "thumb", src: imageUrl(run, hit.thumbnail), alt: hit.title }) : null,
    el("div", {}, el("div", {}, el("b", {}, hit.title)), el("div", {}, link(hit.url)),
      hit.summary ? el("div", { class: "summary" }, hit.summary) : null));
}

function callView(run, call, i) {
  return el("div", { class: call.error ? "call failed" : "call", "data-call": i },
    el("div", {}, el("span", { class: "badge" }, call.tool + " search"),
      call.query !== null ? el("code", {}, call.query) : null,
      el("span", { class: "muted" }, `  ${num(1000 * (call.latency_s ?? NaN), 0)} ms · ${call.n_hits ?? call.hits.length} hits · `,
        call.turn === -1 ? "before the first turn" : `asked in assistant turn ${call.turn + 1}`),
      call.observation !== null ? el("a", { class: "muted", onclick: () => {
        document.getElementById(`turn-${run}-${call.observation}`).scrollIntoView();
      } }, "  → observation") : null),
    call.error ? el("div", { class: "error" }, call.error) : null,
    call.hits.map((h) => hitView(run, h)));
}

function rewardTable(t) {
  const r = t.reward || {};
  const fields = [["score", r.score], ["accuracy", r.accuracy], ["penalty", r.penalty],
    ["format", r.format_score], ["searches", r.search_count], ["advantage", t.advantage]];
  return el("table", { class: "reward" }, el("tbody", {},
    fields.filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => el("tr", {}, el("th", {}, k),
        el("td", { class: "num" }, k === "searches" ? v : typeof v === "number" ? num(v) : v))),
    r.error ? el("tr", {}, el("th", {}, "error"), el("td", { class: "error" }, r.error)) : null));
}

function trajectoryView(run, t) {
  if (!t) return el("p", { class: "muted" }, "not in this run");
  const r = t.row;
  if (t.bad) return el("div", {}, el("p", { class: "error" }, `line ${r.line} is bad: ${r.bad}`), el("pre", {}, r.question));
  const labels = [["method", t.method], ["category", t.labels.category], ["need", t.labels.need],
    ["end", r.end_reason], ["step", t.step], ["group", t.group]].filter(([, v]) => v !== undefined && v !== null && v !== "");
  return el("div", { class: "trajectory" },
    el("div", { class: "layout" },
      el("div", {}, t.question_image ? el("img", { class: "question", src: imageUrl(run, t.question_image), alt: "question image" })
        : el("p", { class: "muted" }, "no image saved")),
      el("div", {},
        el("h2", {}, r.question),
        el("p", {}, verdict(r.correct), " answer: ", el("b", { class: "answer" }, r.answer ?? "(none)"),
          "  golds: ", el("span", { class: "golds" }, t.golds.join(" | "))),
        el("p", {}, labels.map(([k, v]) => el("span", { class: "badge" }, `${k}: ${v}`))),
        r.error ? el("p", { class: "error" }, "policy error: ", r.error) : null,
        rewardTable(t))),
    el("h2", {}, `Tool calls (${t.tool_calls.length})`),
    t.tool_calls.length ? t.tool_calls.map((c, i) => callView(run, c, i)) : el("p", { class: "muted" }, "no search"),
    el("h2", {}, "Conversation, as the model saw it"),
    t.turns.map((turn, i) => el("div", { class: "turn " + turn.role, id: `turn-${run}-${i}` },
      el("div", { class: "role" }, `${i + 1}. ${turn.role}`), pieces(run, turn.pieces))));
}

async function trajectoryPage(params) {
  const run = params.get("run");
  const line = Number(params.get("line"));
  const data = await api("trajectory", { run, line });
  setCrumbs([data.run.name, hash("run", { run })], [`line ${line}`, hash("t", { run, line })]);
  const runs = await api("runs");
  const others = runs.runs.filter((r) => r.key !== run).map((r) => r.key);
  const id = data.trajectory.row.id;
  show(
    el("div", { class: "pager" },
      line > 1 ? el("a", { href: hash("t", { run, line: line - 1 }) }, "← line " + (line - 1)) : null,
      el("a", { href: hash("t", { run, line: line + 1 }) }, "line " + (line + 1) + " →"),
      others.length ? el("a", { href: hash("side", { run: [run, ...others], id }) }, "this question in every run") : null),
    el("p", { class: "muted" }, data.run.name, " · line ", line, " · id ", id),
    trajectoryView(run, data.trajectory));
}

async function sidePage(params) {
  const runs = params.getAll("run");
  const id = params.get("id");
  const data = await api("side", { run: runs, id });
  setCrumbs(["compare", hash("compare", { run: runs })], [id, hash("side", { run: runs, id })]);
  const grid = el("div", { class: "side" }, data.runs.map((x) => el("div", {},
    el("h2", {}, x.run.name), trajectoryView(x.run.key, x.trajectory))));
  grid.style.gridTemplateColumns = `repeat(${data.runs.length}, minmax(0, 1fr))`;
  show(el("h1", {}, "Side by side: ", id), grid);
}

async function comparePage(params) {
  const runs = params.getAll("run");
  const disagree = params.get("disagree") || "correct";
  const offset = Number(params.get("offset") || 0);
  const data = await api("compare", { run: runs, disagree, offset, limit: PAGE });
  setCrumbs(["compare", hash("compare", { run: runs })]);
  const go = (o) => { location.hash = hash("compare", { run: runs, disagree, offset: o }); };
  const head = ["id", "question", ...data.runs.map((r) => r.name)];
  const rows = data.items.map((item) => el("tr", { class: "click",
    onclick: () => { location.hash = hash("side", { run: runs, id: item.id }); } },
  el("td", {}, item.id), el("td", {}, item.question),
  item.cells.map((c) => el("td", {}, verdict(c.correct), " ", c.answer ?? "", c.searched ? el("span", { class: "badge" }, c.tools) : null))));
  const choose = el("select", { name: "disagree", onchange: (e) => {
    location.hash = hash("compare", { run: runs, disagree: e.target.value });
  } }, [["correct", "correctness"], ["searched", "whether they searched"], ["answer", "the answer"], ["all", "(show all)"]]
    .map(([v, t]) => el("option", { value: v, selected: v === disagree }, t)));
  show(
    el("h1", {}, "Runs side by side"),
    el("table", {}, el("thead", {}, el("tr", {}, ["run", "lines", "accuracy", "search ratio"].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.runs.map((r, i) => { const o = (r.metrics && r.metrics.overall) || {};
        return el("tr", {}, el("td", {}, el("a", { href: hash("run", { run: runs[i] }) }, r.name)),
          el("td", { class: "num" }, data.n_common + data.only_in[i]),
          el("td", { class: "num" }, pct(o.accuracy_judge ?? o.accuracy_em)), el("td", { class: "num" }, pct(o.search_ratio))); }))),
    el("p", {}, `${data.n_common} questions in every run; patterns (one mark per run): `,
      Object.entries(data.patterns).map(([p, n]) => el("span", { class: "badge" }, `${p} ${n}`))),
    el("p", {}, el("label", {}, "Questions where they differ in ", choose)),
    pager(data.total, offset, PAGE, go),
    el("table", { id: "disagree" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
    pager(data.total, offset, PAGE, go));
}

async function trainingPage(params) {
  const key = params.get("key");
  const data = await api("training", { key });
  setCrumbs([data.path, hash("training", { key })]);
  const byStep = Object.fromEntries(data.metrics.map((m) => [m.step, m]));
  show(el("h1", {}, "Training: ", data.path),
    el("table", { id: "steps" }, el("thead", {}, el("tr", {}, ["step", "samples", "correct", "searched", "mean reward",
      "reward/mean (all)", "search/ratio (all)"].map((h) => el("th", {}, h)))),
    el("tbody", {}, data.steps.map((s) => { const m = byStep[s.step] || {};
      return el("tr", { class: "click", onclick: () => { location.hash = hash("groups", { run: s.key }); } },
        el("td", {}, s.step ?? s.name), el("td", { class: "num" }, s.counts.n), el("td", { class: "num" }, s.counts.correct),
        el("td", { class: "num" }, s.counts.searched), el("td", { class: "num" }, num(s.counts.mean_reward)),
        el("td", { class: "num" }, num(m["reward/mean"])), el("td", { class: "num" }, num(m["search/ratio"]))); }))));
}

async function groupsPage(params) {
  const run = params.get("run");
  const offset = Number(params.get("offset") || 0);
  const data = await api("groups", { run, offset, limit: 50 });
  const crumbsList = data.run.training ? [["training", hash("training", { key: data.run.training })]] : [];
  setCrumbs(...crumbsList, [data.run.name, hash("groups", { run })]);
  const go = (o) => { location.hash = hash("groups", { run, offset: o }); };
  show(el("h1", {}, data.run.name, " — samples by prompt"),
    el("div", { class: "cards" }, metricCards(data.metrics)), countCards(data.counts, "all"),
    el("p", {}, el("a", { href: hash("run", { run }) }, "as a list with filters")),
    pager(data.total, offset, 50, go),
    data.items.map((g) => el("div", { class: "group" },
      el("div", {}, el("b", {}, g.question), "  golds: ", g.golds.join(" | "), "  ",
        el("span", { class: "badge" }, `${g.correct}/${g.n} correct`), el("span", { class: "badge" }, `${g.searched}/${g.n} searched`),
        el("span", { class: "badge" }, `reward ${num(g.mean_reward)} ± ${num(g.std_reward)}`),
        g.std_reward === 0 ? el("span", { class: "nosignal" }, "all rewards equal: no signal") : null),
      el("table", {}, el("thead", {}, el("tr", {}, ["line", "answer", "", "tools", "reward", "advantage", "end"].map((h) => el("th", {}, h)))),
        el("tbody", {}, g.samples.map((s) => el("tr", { class: "click", onclick: () => { location.hash = hash("t", { run, line: s.line }); } },
          el("td", { class: "num" }, s.line), el("td", {}, s.answer ?? ""), el("td", {}, verdict(s.correct)),
          el("td", {}, s.tools === "none" ? "" : s.tools), el("td", { class: "num" }, num(s.reward)),
          el("td", { class: "num" }, num(s.advantage)), el("td", {}, s.end_reason))))))),
    pager(data.total, offset, 50, go));
}

async function openPage(params) {
  // links from reports: resolved folder paths -> runs (one: its list; several: side by side)
  const data = await api("runs");
  const keys = [];
  for (const path of params.getAll("path")) {
    const run = data.runs.find((r) => r.path === path);
    const training = data.trainings.find((t) => t.path === path);
    if (training && params.getAll("path").length === 1) { location.hash = hash("training", { key: training.key }); return; }
    if (run) keys.push(run.key);
  }
  if (keys.length === 0) throw new Error("this inspector does not serve " + params.getAll("path").join(", "));
  location.hash = keys.length === 1 ? hash("run", { run: keys[0] }) : hash("compare", { run: keys });
}

const ROUTES = { "": home, run: runList, t: trajectoryPage, side: sidePage, compare: comparePage,
  training: trainingPage, groups: groupsPage, open: openPage };

async function route() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const view = ROUTES[path] || home;
  document.body.dataset.view = "loading";
  try {
    await view(new URLSearchParams(query || ""));
    document.body.dataset.view = path || "home";
  } catch (error) {
    show(el("p", { class: "error" }, String(error.message || error)));
    document.body.dataset.view = "error";
  }
}

window.addEventListener("hashchange", route);
route();
