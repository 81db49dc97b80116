// pipeline-state dashboard: plain JavaScript and SVG, no library and nothing loaded from elsewhere.
// Each view is drawn from one JSON document of the read-only API and redrawn when it changes: the page
// follows the server's change feed (/api/events, server-sent events: the database changed) and fetches its
// view again then; without the feed it polls every POLL_MS. Either way it sends the document's ETag, so an
// unchanged view costs the server a 304.
// No inline style or script (the Content-Security-Policy refuses them): bar sizes are data-width and
// data-height attributes, set through the DOM once the view is drawn.
"use strict";

const POLL_MS = 2000; // without the change feed
const FEED_POLL_MS = 60000; // with it: only a safety net
let feed = null;
const STATES = ["completed", "stale", "failed", "running", "empty"];
const view = document.getElementById("view");
const live = document.getElementById("live");
const tags = new Map(); // url -> [etag, document]
let timer = null;

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function getJSON(url) {
  const known = tags.get(url);
  const response = await fetch(url, { headers: known ? { "If-None-Match": known[0] } : {}, cache: "no-store" });
  if (response.status === 304 && known) return [known[1], false];
  if (response.status === 401) { location.href = "/login"; throw new Error("signed out"); }
  if (!response.ok) throw new Error((await response.json()).detail || response.statusText);
  const document_ = await response.json();
  tags.set(url, [response.headers.get("etag"), document_]);
  return [document_, true];
}

function usd(value) {
  if (value === null || value === undefined) return "—";
  const number = Number(value);
  return (number !== 0 && Math.abs(number) < 0.01 ? number.toPrecision(3) : number.toFixed(2)) + " USD";
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

function chips(counts) {
  return STATES.map((s) => (counts[s] ? `<span class="chip ${s}" title="${s}">${counts[s]}</span>` : "")).join("");
}

function budgetBar(p) {
  if (!p.budget_usd) return `<span class="muted">no budget</span> · ${usd(p.spent_usd)}`;
  const budget = Number(p.budget_usd) || 1;
  const spent = Math.min(100, (100 * Number(p.spent_usd)) / budget);
  const reserved = Math.min(100 - spent, (100 * Number(p.reserved_usd)) / budget);
  return `<div class="budget${p.exceeded ? " over" : ""}" title="spent ${esc(p.spent_usd)}, reserved ${esc(p.reserved_usd)}, remaining ${esc(p.remaining_usd)} of ${esc(p.budget_usd)} USD">
    <div class="spent" data-width="${spent}"></div><div class="reserved" data-width="${reserved}"></div></div>
    <span class="muted">${usd(p.spent_usd)} of ${usd(p.budget_usd)}</span>`;
}

function sized(root) {
  for (const el of root.querySelectorAll("[data-width]")) el.style.width = `${Number(el.dataset.width)}%`;
  for (const el of root.querySelectorAll("[data-height]")) el.style.height = `${Number(el.dataset.height)}%`;
}

function stepPages(project, id) {
  const shown = project.steps.length, total = project.steps_total, page = project.steps_page;
  if (shown === total) return "";
  const link = (n, label) => `<a href="#/project/${esc(id)}/steps/${n}">${label}</a>`;
  const last = Math.max(1, Math.ceil(total / project.steps_per_page));
  return `<p class="muted" id="step-pages">Steps ${project.steps_first}–${project.steps_first + shown - 1} of ${total}
    (${project.steps_omitted} not shown) ${page > 1 ? link(page - 1, "← previous") : ""} ${page < last ? link(page + 1, "next →") : ""}</p>`;
}

async function projectsView() {
  const [page, changed] = await getJSON("/api/projects");
  if (!changed && view.dataset.view === "projects") return;
  view.dataset.view = "projects";
  view.innerHTML = `<h1>Projects</h1>${page.items.length ? "" : '<p class="muted">No project yet: agents create them with create_project.</p>'}
  <table id="projects"><thead><tr><th>Project</th><th>Pipeline</th><th>Steps by state</th><th>Budget</th><th>Last activity</th></tr></thead><tbody>
  ${page.items.map((p) => `<tr data-project="${esc(p.id)}"><td><a href="#/project/${esc(p.id)}">${esc(p.name)}</a><div class="muted">${esc(p.status)}</div></td>
    <td>${esc(p.pipeline_id)} <span class="muted">(${p.steps})</span></td><td>${chips(p.counts)}</td><td>${budgetBar(p)}</td><td>${when(p.last_activity)}</td></tr>`).join("")}
  </tbody></table>${page.has_more ? '<p class="muted">Showing the newest projects.</p>' : ""}`;
  sized(view);
}

// A completed step's required checks that are failed (✗) or missing (…): they hold its dependants.
function checkMarks(s) {
  return [...(s.checks_failed || []).map((n) => "✗ " + n), ...(s.checks_missing || []).map((n) => "… " + n)].join(" ");
}

function graphSVG(steps) {
  const W = 168, H = 46, GX = 64, GY = 18, PAD = 16;
  const layers = new Map();
  for (const s of steps) { if (!layers.has(s.layer)) layers.set(s.layer, []); layers.get(s.layer).push(s); }
  const at = new Map();
  let rows = 0;
  for (const [layer, members] of layers) {
    members.forEach((s, i) => at.set(s.id, [PAD + layer * (W + GX), PAD + i * (H + GY)]));
    rows = Math.max(rows, members.length);
  }
  const width = PAD * 2 + layers.size * (W + GX) - GX, height = PAD * 2 + rows * (H + GY) - GY;
  const edges = steps.flatMap((s) => s.depends_on.filter((d) => at.has(d)).map((d) => {
    const [x1, y1] = at.get(d), [x2, y2] = at.get(s.id);
    const a = [x1 + W, y1 + H / 2], b = [x2, y2 + H / 2], m = (a[0] + b[0]) / 2;
    return `<path data-edge="${esc(d)}->${esc(s.id)}" d="M${a[0]},${a[1]} C${m},${a[1]} ${m},${b[1]} ${b[0]},${b[1]}"/>`;
  }));
  const nodes = steps.map((s) => {
    const [x, y] = at.get(s.id);
    const marks = checkMarks(s);
    const sub = marks || (s.state === "stale" && s.stale_cause ? `stale ← ${s.stale_cause}` : `${s.state} · v${s.version}`);
    return `<g class="node ${esc(s.state)}${marks ? " held" : ""}" data-node="${esc(s.id)}"><title>${esc(s.id)}: ${esc(s.state)}${s.reason ? " (" + esc(s.reason) + ")" : ""}${marks ? " — checks: " + esc(marks) : ""}</title>
      <rect x="${x}" y="${y}" width="${W}" height="${H}" rx="6" class="${esc(s.state)}"/>
      <text x="${x + 10}" y="${y + 19}" font-weight="600">${esc(s.id.length > 22 ? s.id.slice(0, 21) + "…" : s.id)}</text>
      <text x="${x + 10}" y="${y + 36}">${esc(sub)}</text></g>`;
  });
  return `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${edges.join("")}${nodes.join("")}</svg>`;
}

function costBars(rows, key) {
  const top = Math.max(...rows.map((r) => Number(r.cost_usd || 0)), 0) || 1;
  return rows.map((r) => {
    const total = Number(r.cost_usd || 0), rework = Number(r.superseded_cost_usd || 0);
    return `<div class="bar" data-${key}="${esc(r[key])}" data-cost="${esc(r.cost_usd ?? "")}"><span class="label" title="${esc(r[key])}">${esc(r[key])}</span>
      <span class="track"><span class="fill" data-width="${(100 * (total - rework)) / top}"></span><span class="rework" data-width="${(100 * rework) / top}"></span></span>
      <span class="value">${usd(r.cost_usd)} <span class="muted">${r.calls} calls</span></span></div>`;
  }).join("") || '<p class="muted">No cost logged yet.</p>';
}

function alertList(cost) {
  return (cost.alerts || []).map((a) => `<li data-alert="${esc(a.scope)}:${a.threshold}">${when(a.crossed_at)}: ${esc(a.scope)} reached ${a.threshold}% (${usd(a.spent_usd)} of ${usd(a.limit_usd)})</li>`).join("") || '<li class="muted">None yet.</li>';
}

function dayBars(cost) {
  const top = Math.max(...cost.by_day.map((d) => Number(d.cost_usd || 0)), 0) || 1;
  return cost.by_day.map((d) => `<div data-day="${esc(d.day)}" title="${esc(d.day)}: ${usd(d.cost_usd)}" data-height="${Math.max(1, (100 * Number(d.cost_usd || 0)) / top)}"></div>`).join("");
}

async function projectView(id, stepPage) {
  const base = `/api/projects/${encodeURIComponent(id)}`;
  const [[project, a], [cost, b], [timeline, c]] = await Promise.all([getJSON(`${base}?page=${stepPage}`), getJSON(base + "/cost"), getJSON(base + "/executions")]);
  if (!(a || b || c) && view.dataset.view === `project:${id}:${stepPage}`) return;
  view.dataset.view = `project:${id}:${stepPage}`;
  const totals = cost.totals;
  view.innerHTML = `<p><a href="#/">← Projects</a></p><h1>${esc(project.name)} <span class="muted">· ${esc(project.pipeline_id)}</span></h1>
  <div class="cards"><div class="card"><b>${project.steps_total}</b>steps</div>
    ${STATES.map((s) => `<div class="card" data-count="${s}"><b>${project.counts[s] || 0}</b><span class="chip ${s}">&nbsp;</span> ${s}</div>`).join("")}
    <div class="card"><b data-total-cost="${esc(totals.cost_usd ?? "")}">${usd(totals.cost_usd)}</b>spent</div>
    <div class="card"><b data-rework-cost="${esc(totals.superseded_cost_usd ?? "")}">${usd(totals.superseded_cost_usd)}</b>rework</div></div>
  <h2>Pipeline</h2><div class="legend">${STATES.map((s) => `<span><span class="chip ${s}">&nbsp;</span> ${s}</span>`).join("")}</div>
  ${stepPages(project, id)}<div class="graph" id="graph">${graphSVG(project.steps)}</div>
  <h2>Steps</h2><table id="steps"><thead><tr><th>Step</th><th>State</th><th>Version</th><th>Last update</th><th>Current output</th></tr></thead><tbody>
  ${project.steps.map((s) => `<tr data-step="${esc(s.id)}" data-state="${esc(s.state)}"><td><b>${esc(s.id)}</b><div class="muted">${esc(s.name)}</div></td>
    <td><span class="chip ${esc(s.state)}">${esc(s.state)}</span>${s.stale_cause ? `<div class="stale-cause">cause: <b>${esc(s.stale_cause)}</b> — ${esc(s.reason || "")}</div>` : ""}${checkMarks(s) ? `<div class="checks" data-checks="${esc(checkMarks(s))}">checks: ${esc(checkMarks(s))}</div>` : ""}</td>
    <td>v${s.version}</td><td>${when(s.updated)}</td><td class="preview">${esc(s.output ?? "")}</td></tr>`).join("")}</tbody></table>
  <h2>Cost by model</h2><div class="bars" id="by-model">${costBars(cost.by_model, "model")}<p class="muted">Hatched: rework (executions no longer current) — ${usd(totals.superseded_cost_usd)} of ${usd(totals.cost_usd)}.</p></div>
  <h2>Cost by agent</h2><div class="bars" id="by-agent">${costBars(cost.by_agent || [], "agent")}</div>
  <h2>Budget alerts</h2><ul id="alerts">${alertList(cost)}</ul>
  <h2>Cost by day</h2><div class="days" id="by-day">${dayBars(cost)}</div>
  <h2>Executions <span class="muted">(${timeline.total}, newest first)</span></h2><table id="timeline"><thead><tr><th>When</th><th>Step</th><th>Status</th><th>By</th></tr></thead><tbody>
  ${timeline.items.map((e) => `<tr data-execution="${esc(e.id)}"><td>${when(e.completed_at || e.started_at)}</td><td>${esc(e.process_id)}</td><td class="status-${esc(e.status)}">${esc(e.status)}</td><td class="muted">${esc(e.created_by || "")}</td></tr>`).join("")}</tbody></table>`;
  sized(view);
}

async function render() {
  clearTimeout(timer);
  const match = location.hash.match(/^#\/project\/([0-9a-fA-F-]{36})(?:\/steps\/([1-9][0-9]{0,6}))?$/);
  try {
    await (match ? projectView(match[1], Number(match[2] || 1)) : projectsView());
    live.className = "";
    live.textContent = "live";
  } catch (error) {
    live.className = "off";
    live.textContent = "offline: " + error.message;
  }
  const following = feed !== null && feed.readyState === EventSource.OPEN;
  timer = setTimeout(render, following ? FEED_POLL_MS : POLL_MS);
}

function follow() {
  if (!("EventSource" in window)) return;
  feed = new EventSource("/api/events");
  feed.addEventListener("change", () => render());
  feed.addEventListener("open", () => { clearTimeout(timer); timer = setTimeout(render, FEED_POLL_MS); });
}

window.addEventListener("hashchange", () => { view.dataset.view = ""; render(); });
follow();
render();
