// The dashboard: reads /api/..., draws the page, reads again every second. No framework, no network beyond
// this server. Every value from the server goes into the page as text (el() below), never as HTML.
"use strict";

const REFRESH_MS = 1000;
const TOKEN_KEY = "resilient-web-token";
const SVG_NS = "http://www.w3.org/2000/svg";
const main = document.getElementById("main");
const state = { config: { actions: false }, held: 0, rates: new Map() };

// --- small helpers ---------------------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key === "cls" ? "class" : key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key === "cls" ? "class" : key, value);
  for (const child of children.flat(Infinity)) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function clock(ms) {
  return ms ? new Date(Number(ms)).toLocaleTimeString([], { hour12: false }) : "-";
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  if (value < 60) return `${value.toFixed(0)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${(value / 3600).toFixed(1)} h`;
}

function jobLink(id) { return id ? el("a", { href: `/job/${encodeURIComponent(id)}`, cls: "mono" }, id) : "-"; }
function workerLink(name) { return name ? el("a", { href: `/worker/${encodeURIComponent(name)}` }, name) : "-"; }
function badge(status) { return el("span", { cls: `badge ${status}` }, status || "-"); }
const NUMERIC = new Set(["depth", "delayed", "finished", "done/s", "pid", "attempt", "items/s", "deaths", "step-asides"]);
function table(head, rows, empty) {
  if (!rows.length) return el("p", { cls: "muted" }, empty);
  return el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { cls: NUMERIC.has(h) ? "num" : null }, h)))),
            el("tbody", {}, rows));
}
function card(title, ...content) { return el("section", { cls: "card" }, el("h2", {}, title), content); }

// A rate per key over the last ~10 s of readings (done/s of a queue, items/s of a job).
function rate(key, value, at) {
  const seen = (state.rates.get(key) || []).filter(([t]) => at - t <= 10);
  seen.push([at, value]);
  state.rates.set(key, seen);
  const [t0, v0] = seen[0];
  return at > t0 ? Math.max(0, (value - v0) / (at - t0)) : null;
}

function memoryBar(rss, limit, soft, hard, level) {
  if (!limit || rss === null || rss === undefined) return "-";
  const pct = (x) => `${Math.min(100, (x / limit) * 100).toFixed(1)}%`;
  return el("span", { cls: "bar", title: `${size(rss)} of ${size(limit)}` },
    el("span", { cls: `fill ${level || ""}`, style: `width:${pct(rss)}` }),
    el("span", { cls: "line soft", style: `left:${(soft * 100).toFixed(1)}%` }),
    el("span", { cls: "line hard", style: `left:${(hard * 100).toFixed(1)}%` }));
}

function progress(job) {
  if (!job.total) return `${job.done} items`;
  const pct = Math.min(100, (100 * job.done) / job.total);
  return el("span", {}, el("span", { cls: "progress" }, el("div", { style: `width:${pct.toFixed(1)}%` })),
            ` ${job.done}/${job.total}`);
}

function flash(message, isError) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = isError ? "flash error" : "flash";
  box.hidden = false;
}

// --- actions (need the token) ----------------------------------------------------------------------------
async function act(jobId, action) {
  if (action === "cancel" && !window.confirm(`Cancel job ${jobId} for good?`)) return;
  const headers = {};
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers["X-Resilient-Token"] = token;
  const reply = await fetch(`/api/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST", headers });
  const body = await reply.json().catch(() => ({ error: `HTTP ${reply.status}` }));
  flash(reply.ok ? body.message : body.error, !reply.ok);
  refresh();
}

function actionButtons(job) {
  if (job.status !== "parked" && job.status !== "failed") return null;
  const disabled = !state.config.actions;
  const title = disabled ? "read-only dashboard: start it with a token to allow actions" : null;
  const button = (action, label, cls) =>
    el("button", { cls, "data-action": action, disabled, title, onclick: () => act(job.id, action) }, label);
  return el("span", { cls: "actions" }, button("requeue", "Requeue"), button("restart", "Restart from scratch"),
            job.status === "parked" ? button("cancel", "Cancel", "danger") : null);
}

// --- pages -------------------------------------------------------------------------------------------------
const pages = [
  [/^\/$/, () => "/api/status", overview],
  [/^\/job\/([^/]+)$/, (id) => `/api/jobs/${id}`, jobPage],
  [/^\/parked$/, () => "/api/held", heldPage],
  [/^\/worker\/([^/]+)$/, (name) => `/api/workers/${name}`, workerPage],
];

function overview(data) {
  const at = data.at;
  const queues = data.queues.map((q) => {
    const done = rate(`q:${q.name}`, q.finished, at);
    return el("tr", {}, el("td", {}, q.name), el("td", { cls: "num" }, q.depth), el("td", { cls: "num" }, q.delayed),
              el("td", { cls: "num" }, q.finished), el("td", { cls: "num" }, done === null ? "-" : done.toFixed(1)));
  });
  const workers = data.workers.map((w) => el("tr", {},
    el("td", {}, workerLink(w.name)), el("td", {}, w.hostname), el("td", { cls: "num" }, w.pid), el("td", {}, stateText(w)),
    el("td", {}, memoryBar(w.rss, w.limit, w.soft, w.hard, w.level), " ", w.limit ? `${size(w.rss)} / ${size(w.limit)}` : ""),
    el("td", { cls: `level-${w.level}` }, w.level || "-"), el("td", {}, jobLink(w.current_job))));
  const running = data.running.map((job) => {
    const speed = rate(`j:${job.id}:${job.attempt}`, job.done, at);
    const eta = speed && job.total ? (job.total - job.done) / speed : null;
    return el("tr", { "data-job": job.id }, el("td", {}, jobLink(job.id)), el("td", {}, job.name),
              el("td", { cls: "num" }, job.attempt), el("td", {}, progress(job)),
              el("td", { cls: "num" }, speed === null ? "-" : speed.toFixed(1)), el("td", {}, seconds(eta)),
              el("td", {}, seconds(job.checkpoint_age_s)), el("td", {}, workerLink(job.worker)));
  });
  const more = data.running_count - data.running.length;
  const deaths = data.recent_deaths.map((d) => el("tr", {}, el("td", {}, clock(d.at)), el("td", {}, d.cause),
                                                   el("td", {}, jobLink(d.job_id))));
  const causes = Object.entries(data.deaths_by_cause).map(([cause, n]) => el("span", {}, `${cause} × ${n}`));
  const redis = data.redis;
  return [
    el("h1", {}, "Overview"),
    card("Queues", table(["queue", "depth", "delayed", "finished", "done/s"], queues, "no queues yet")),
    card("Workers", table(["worker", "host", "pid", "state", "memory vs limit (soft, hard lines)", "level", "job"],
                          workers, "no workers running")),
    groupsCard(data.groups.filter((g) => g.members.length > 1)),
    card(`Running jobs (${data.running_count})`,
         table(["job", "name", "attempt", "progress", "items/s", "ETA", "checkpoint age", "worker"], running,
               "nothing running"),
         more > 0 ? el("p", { cls: "muted" }, `… and ${more} more running (/api/status?all=1 lists them all)`) : null),
    card("Recent deaths", el("div", { cls: "chips" }, causes.length ? causes : el("span", { cls: "muted" }, "none")),
         table(["when", "cause", "job"], deaths, "")),
    el("p", { cls: "muted" }, el("a", { href: "/parked" }, `parked jobs: ${data.parked}`), " · ",
       `Redis ${size(redis.used_memory)} used${redis.maxmemory ? ` of ${size(redis.maxmemory)}` : ""} (${redis.maxmemory_policy}); `,
       `${redis.retained_jobs} jobs retained, ~${size(redis.retained_bytes)} of their keys`),
  ];
}

function groupsCard(groups) {
  if (!groups.length) return null;
  const rows = groups.flatMap((g) => [
    el("tr", {}, el("td", {}, `group ${g.id.slice(0, 8)}`), el("td", {}, g.host),
       el("td", {}, memoryBar(g.usage, g.limit, g.soft / g.limit, g.hard / g.limit, g.level), ` ${size(g.usage)} / ${size(g.limit)}`),
       el("td", { cls: `level-${g.level}` }, g.level), el("td", {}, `${g.waiting.length} waiting`),
       el("td", { cls: "num" }, g.step_asides)),
    ...g.members.map((m) => el("tr", {}, el("td", {}, "└ ", workerLink(m.worker)), el("td", {}, m.pid),
      el("td", {}, m.horse_rss ? memoryBar(m.horse_rss, g.limit, g.soft / g.limit, g.hard / g.limit, "") : "-",
         m.horse_rss ? ` ${size(m.horse_rss)}` : ""), el("td", {}, jobLink(m.job)), el("td", {}, waitsFor(g, m.worker)),
      el("td", {}))),
  ]);
  return card("Limit groups (workers under one memory limit)", el("span", { id: "groups" }),
              table(["group / worker", "host / pid", "memory vs shared limit", "level / job", "waiting", "step-asides"], rows, ""));
}

function waitsFor(group, worker) {
  const wait = group.waiting.find((w) => w.worker === worker);
  return wait ? [jobLink(wait.job), wait.expected ? ` (~${size(wait.expected)})` : ""] : "";
}

function jobPage(job) {
  const speed = job.status === "running" ? rate(`j:${job.id}:${job.attempt}`, job.done, job.at) : null;
  const eta = speed && job.total ? (job.total - job.done) / speed : null;
  const facts = [["name", job.name], ["queue", job.queue], ["status", badge(job.status)], ["attempt", job.attempt],
    ["deaths", job.deaths], ["progress", progress(job)], ["items/s", speed === null ? "-" : speed.toFixed(1)],
    ["ETA", seconds(eta)],
    ["checkpoint", `seq ${job.checkpoint_seq}` + (job.checkpoint_age_s !== null ? `, ${seconds(job.checkpoint_age_s)} ago` : "")],
    ["worker", workerLink(job.worker)]];
  if (job.parked_reason) facts.push(["parked", job.parked_reason]);
  if (job.error) facts.push(["error", job.error]);
  const actions = actionButtons(job);
  return [
    el("h1", {}, "job ", el("span", { cls: "mono" }, job.id), " ", badge(job.status)),
    el("section", { cls: "card" }, el("dl", { cls: "kv", id: "facts" }, facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, v)])),
       actions ? el("p", {}, actions) : null),
    card("Memory (RSS of every attempt against its limit)", memoryChart(job)),
    card("Deaths", deathCards(job.timeline)),
    card("Timeline", table(["when", "event", "details"], job.timeline.map((e) =>
      el("tr", {}, el("td", {}, clock(e.at)), el("td", {}, e.type), el("td", { cls: "mono" }, eventDetails(e)))), "no events")),
    card("Checkpoints kept (newest first)", table(["seq", "epoch", "saved", "bytes"], [...job.checkpoints].reverse().map((c) =>
      el("tr", {}, el("td", {}, c.seq), el("td", {}, c.epoch), el("td", {}, clock(c.saved_at)), el("td", {}, c.bytes))), "none yet")),
  ];
}

function eventDetails(e) {
  if (e.type === "started") return `attempt ${e.attempt} (epoch ${e.epoch}) on ${e.worker}@${e.host}`;
  if (e.type === "died") return `${e.cause} at checkpoint ${e.seq}`;
  if (e.type === "requeued") return `from checkpoint ${e.from_seq} (${e.reason || ""})`;
  return Object.entries(e).filter(([k]) => !["type", "at", "evidence"].includes(k)).map(([k, v]) => `${k}=${v}`).join(", ");
}

const SIZED = new Set(["rss", "peak_rss", "ru_maxrss", "limit", "usage", "group_usage", "horse_rss"]);

function deathCards(timeline) {
  const cards = [];
  let attempt = null;
  timeline.forEach((event, index) => {
    if (event.type === "started") attempt = event.attempt;
    if (event.type !== "died") return;
    const after = timeline.slice(index + 1).find((e) => e.type !== "died");
    const verdict = after ? `then ${after.type}${after.type === "requeued" ? ` from checkpoint ${after.from_seq}` : ""}` +
      (after.parked_reason ? `: ${after.parked_reason}` : "") : "";
    const evidence = Object.entries(event.evidence || {}).filter(([k]) => !["cause", "attempt"].includes(k))
      .map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { cls: "mono" },
        SIZED.has(k) && typeof v === "number" ? size(v) : typeof v === "object" ? JSON.stringify(v) : String(v))));
    const stepAside = event.cause.startsWith("preempted");
    cards.push(el("div", { cls: `death${stepAside ? " step-aside" : ""}`, "data-cause": event.cause },
      el("h3", {}, `${clock(event.at)} · attempt ${attempt ?? "?"} · `, el("span", { cls: "cause" }, event.cause),
         ` at checkpoint ${event.seq}`),
      el("div", {}, event.explanation || ""), verdict ? el("div", { cls: "muted" }, verdict) : null,
      evidence.length ? el("details", {}, el("summary", {}, "evidence"), el("table", { cls: "evidence" }, el("tbody", {}, evidence))) : null));
  });
  return cards.length ? cards : el("p", { cls: "muted" }, "no deaths");
}

const ATTEMPT_COLOURS = ["#2f5fd0", "#8e44ad", "#16a085", "#d35400", "#2c3e50", "#7f8c8d"];

function memoryChart(job) {
  const memory = job.memory;
  const samples = memory.samples;
  const marks = memory.marks || [];
  if (!memory.limit) return el("p", { cls: "muted" }, "no memory limit recorded for this job");
  if (!samples.length) return el("p", { cls: "muted", id: "no-samples" }, "no memory samples yet (one a second while an attempt runs)");
  const W = 900, H = 280, left = 70, right = 90, top = 26, bottom = 30;
  const starts = job.timeline.filter((e) => e.type === "started").map((e) => ({ at: Number(e.at), attempt: e.attempt }));
  const times = samples.map((s) => s.at).concat(marks.map((m) => m.at), starts.map((s) => s.at));
  const start = Math.min(...times), end = Math.max(...times), span = Math.max(1, end - start);
  const peak = Math.max(memory.limit, ...samples.map((s) => s.rss), ...marks.map((m) => m.peak_rss)) * 1.05;
  const x = (at) => left + ((at - start) / span) * (W - left - right);
  const y = (value) => H - bottom - (value / peak) * (H - top - bottom);
  const parts = [];
  for (let i = 0; i <= 4; i += 1) {
    const value = (peak * i) / 4;
    parts.push(svg("line", { x1: left, x2: W - right, y1: y(value), y2: y(value), stroke: "#eef0f3" }),
               svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, size(value)));
  }
  for (let i = 0; i <= 5; i += 1) {
    const at = start + (span * i) / 5;
    parts.push(svg("text", { x: x(at), y: H - 10, "text-anchor": "middle" }, `${((at - start) / 1000).toFixed(1)} s`));
  }
  const lines = [["limit", memory.limit, "#c62828", "", `L ${size(memory.limit)}`],
    ["hard", memory.hard * memory.limit, "#e07020", "6 4", `hard ${Math.round(memory.hard * 100)}%`],
    ["soft", memory.soft * memory.limit, "#d9a400", "2 4", `soft ${Math.round(memory.soft * 100)}%`]];
  for (const [name, value, colour, dash, label] of lines) {
    parts.push(svg("line", { cls: `threshold ${name}`, x1: left, x2: W - right, y1: y(value), y2: y(value), stroke: colour,
                             "stroke-width": 1.5, "stroke-dasharray": dash }),
               svg("text", { x: W - right + 6, y: y(value) + 4, style: `fill:${colour}` }, label));
  }
  const attempts = [...new Set(samples.map((s) => s.attempt))];
  for (const attempt of attempts) {
    const own = samples.filter((s) => s.attempt === attempt);
    const colour = ATTEMPT_COLOURS[(attempt - 1) % ATTEMPT_COLOURS.length];
    parts.push(svg("polyline", { cls: "rss", fill: "none", stroke: colour, "stroke-width": 1.6,
                                 points: own.map((s) => `${x(s.at).toFixed(1)},${y(s.rss).toFixed(1)}`).join(" ") }));
    const stride = Math.max(1, Math.ceil(own.length / 400));
    own.filter((_, i) => i % stride === 0).forEach((s) => parts.push(
      svg("circle", { cls: "sample", cx: x(s.at), cy: y(s.rss), r: 2.2, fill: colour },
          svg("title", {}, `attempt ${attempt}: ${size(s.rss)} at ${clock(s.at)} (${s.level})`))));
  }
  starts.forEach((begun) => parts.push(svg("g", { cls: "attempt-start" },
    svg("line", { x1: x(begun.at), x2: x(begun.at), y1: H - bottom - 6, y2: H - bottom, stroke: "#6b7385" }),
    svg("text", { x: x(begun.at) + 3, y: H - bottom - 8 }, `#${begun.attempt}`))));
  for (const mark of marks) {
    const cls = mark.step_aside ? "step-label" : "death-label";
    const colour = mark.step_aside ? "#e07020" : "#c62828";
    parts.push(svg("g", { cls: mark.step_aside ? "step-aside-mark" : "death-mark", "data-cause": mark.cause },
      svg("title", {}, `${mark.cause} at ${clock(mark.at)}${mark.peak_rss ? `, peak ${size(mark.peak_rss)}` : ""}`),
      svg("line", { x1: x(mark.at), x2: x(mark.at), y1: top - 4, y2: H - bottom, stroke: colour, "stroke-dasharray": "3 3" }),
      svg("text", { cls, x: x(mark.at), y: top - 8, "text-anchor": "middle" }, `${mark.mark} ${mark.cause}`),
      mark.peak_rss ? svg("path", { d: `M ${x(mark.at) - 5} ${y(mark.peak_rss) + 4} L ${x(mark.at) + 5} ${y(mark.peak_rss) + 4} L ${x(mark.at)} ${y(mark.peak_rss) - 5} Z`, fill: colour }) : null));
  }
  const legend = el("p", { cls: "legend" },
    attempts.map((a) => el("span", {}, el("i", { style: `background:${ATTEMPT_COLOURS[(a - 1) % ATTEMPT_COLOURS.length]}` }), `attempt ${a}`)),
    el("span", {}, "#n: attempt n starts; dashed vertical: a death (red) or a step-aside (orange); ▲ its peak RSS"),
    el("span", {}, `limit from ${memory.limit_source || "?"}`));
  return [svg("svg", { cls: "chart", id: "memory-chart", viewBox: `0 0 ${W} ${H}`, role: "img" }, parts), legend];
}

function heldPage(data) {
  const parked = data.parked.map((job) => el("tr", { "data-job": job.id }, el("td", {}, jobLink(job.id)), el("td", {}, job.name),
    el("td", {}, clock(job.parked_at)), el("td", {}, job.parked_reason || "-"), el("td", { cls: "num" }, job.deaths),
    el("td", {}, `seq ${job.checkpoint_seq}`), el("td", {}, actionButtons(job))));
  const delayed = data.delayed.map((job) => el("tr", { "data-job": job.id }, el("td", {}, jobLink(job.id)), el("td", {}, job.name),
    el("td", {}, job.queue), el("td", { cls: "num" }, job.attempt), el("td", {}, `${clock(job.due_at)} (in ${seconds(Math.max(0, (job.due_at - Date.now()) / 1000))})`)));
  return [
    el("h1", {}, "Parked & delayed jobs"),
    card(`Parked (${data.parked_count}): stopped being retried, waiting for an operator`,
         table(["job", "name", "parked", "reason", "deaths", "checkpoint", "actions"], parked, "no parked jobs")),
    card(`Delayed (${data.delayed_count}): retries waiting out their backoff`,
         table(["job", "name", "queue", "attempt", "due"], delayed, "no delayed retries")),
  ];
}

function workerPage(w) {
  const group = w.limit_group;
  return [
    el("h1", {}, "worker ", w.name),
    el("section", { cls: "card" }, el("dl", { cls: "kv", id: "worker" }, [["host", w.hostname], ["pid", w.pid], ["state", stateText(w)],
      ["queues", w.queues.join(", ")], ["memory", w.limit ? [memoryBar(w.rss, w.limit, w.soft, w.hard, w.level), ` ${size(w.rss)} of ${size(w.limit)} (limit from ${w.limit_source})`] : "-"],
      ["level", w.level || "-"], ["horse RSS", size(w.horse_rss)], ["job", jobLink(w.current_job)],
      ["limit group", group ? `${group.id.slice(0, 8)}: ${group.members.length} workers, ${size(group.usage)} of ${size(group.limit)}, ${group.step_asides} step-asides` : "-"]]
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
    w.job ? card("Its job", table(["job", "name", "attempt", "progress", "checkpoint age"], [el("tr", {},
      el("td", {}, jobLink(w.job.id)), el("td", {}, w.job.name), el("td", { cls: "num" }, w.job.attempt), el("td", {}, progress(w.job)),
      el("td", {}, seconds(w.job.checkpoint_age_s)))], "")) : null,
  ];
}

// --- the loop --------------------------------------------------------------------------------------------
let pausedUntil = 0;  // a press on a button holds the page still until its click lands
document.addEventListener("pointerdown", () => { pausedUntil = Date.now() + 600; }, true);

async function refresh() {
  const path = location.pathname;
  const page = pages.find(([pattern]) => pattern.test(path));
  const live = document.getElementById("live");
  if (!page) { main.replaceChildren(el("p", {}, "no such page; ", el("a", { href: "/" }, "overview"))); return; }
  const [pattern, api, draw] = page;
  try {
    const reply = await fetch(api(...path.match(pattern).slice(1)), { cache: "no-store" });
    const body = await reply.json();
    if (!reply.ok) { main.replaceChildren(el("p", { cls: "muted" }, body.error)); return; }
    if (Date.now() < pausedUntil) return;
    main.replaceChildren(...[draw(body)].flat().filter(Boolean));
    live.textContent = `live · ${new Date().toLocaleTimeString([], { hour12: false })}`;
    live.classList.remove("stale");
  } catch (error) {
    live.textContent = "disconnected, retrying";
    live.classList.add("stale");
  }
}

async function start() {
  state.config = await (await fetch("/api/config")).json();
  const form = document.getElementById("token-form");
  const mode = document.getElementById("mode");
  const showMode = () => {
    mode.textContent = !state.config.actions ? "read-only" : localStorage.getItem(TOKEN_KEY) ? "actions: token set" : "actions need the token";
  };
  form.hidden = !state.config.actions;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    if (input.value) localStorage.setItem(TOKEN_KEY, input.value); else localStorage.removeItem(TOKEN_KEY);
    input.value = "";
    showMode();
  });
  showMode();
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();

// RQ's state, and, for a worker that has published nothing for 10 s (a live one does every second), that
// it is probably gone: RQ keeps a worker killed whole registered for minutes (views.SILENT_AFTER).
function stateText(w) {
  return w.silent_s !== null && w.silent_s > 10 ? `${w.state}, silent ${Math.round(w.silent_s)} s (dead?)` : w.state;
}
