// 接入验收: pick a kindergarten, run its acceptance, follow the checks, confirm each camera's area on
// its snapshot, wait for the guard's one-button alarm (the drill), read the verdict and the report.
// Reads and writes only /api/acceptance*; the server decides every verdict.

import { getAll, getJson, postJson } from "./api.js";
import { requireUser } from "./auth.js";
import { $, el } from "./dom.js";

const POLL_MS = 1000;
const state = { run: null, timer: null, areas: [], chosen: {} };

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString("zh-CN", { hour12: false }) : "—";
}

async function loadOverdue() {
  let body;
  try { body = await getJson("/api/acceptance-overdue"); } catch (err) { return; }  // a role without it
  const box = $("overdue");
  box.replaceChildren();
  if (!body.items.length) { box.hidden = true; return; }
  box.append(el("b", null, `提醒：${body.total} 所幼儿园超过 ${Math.round(body.period_days)} 天没有通过报警演练`));
  const list = el("ul");
  for (const item of body.items.slice(0, 50)) {
    list.append(el("li", null, `${item.district_name} ${item.name}：${item.reason}`));
  }
  box.append(list);
  box.hidden = false;
}

async function loadDistricts() {
  const body = await getJson("/api/districts");
  const select = $("district");
  select.replaceChildren(el("option", null, "全部"));
  select.firstChild.value = "";
  for (const d of body.items) {
    const option = el("option", null, `${d.name || d.district_code}`);
    option.value = d.district_code;
    select.append(option);
  }
}

async function loadKindergartens() {
  const district = $("district").value;
  const items = await getAll(`/api/kindergartens${district ? `?district=${encodeURIComponent(district)}` : ""}`);
  const select = $("kindergarten");
  select.replaceChildren();
  for (const kg of items) {
    const option = el("option", null, kg.name || kg.id);
    option.value = kg.id;
    select.append(option);
  }
  $("start").disabled = !items.length;
  await loadStanding();
}

async function loadStanding() {
  const kg = $("kindergarten").value;
  $("standing").textContent = "";
  $("history").hidden = true;
  if (!kg) return;
  let body;
  try { body = await getJson(`/api/acceptance?kindergarten=${encodeURIComponent(kg)}`); } catch (err) {
    showError(err.message);
    return;
  }
  const parts = [];
  if (body.latest) parts.push(`最近一次：${body.latest.state_label}（${when(body.latest.started_at)}）`);
  else parts.push("尚未验收");
  parts.push(body.drill_passed_at ? `上次演练通过：${when(body.drill_passed_at)}` : "从未通过报警演练");
  $("standing").replaceChildren(el("span", null, parts.join("；")));
  if (body.needs_reacceptance) {
    $("standing").append(el("span", "reacceptance", ` 需重新验收：${body.reasons.join("；")}`));
  }
  const rows = $("runs");
  rows.replaceChildren();
  for (const run of body.items) {
    const tr = el("tr");
    tr.append(el("td", null, when(run.started_at)), el("td", null, run.started_by), el("td", null, run.state_label));
    const cell = el("td");
    if (run.report_url) {
      const link = el("a", null, "报告");
      link.href = run.report_url;
      link.target = "_blank";
      cell.append(link);
    }
    tr.append(cell);
    rows.append(tr);
  }
  $("history").hidden = !body.items.length;
  if (body.active && (!state.run || state.run.id !== body.active)) follow(body.active);
}

function renderCheck(check) {
  const box = el("div", `check ${check.state}`);
  box.dataset.name = check.name;
  const head = el("h3", null, check.title);
  head.append(el("span", "state", check.state_label));
  box.append(head);
  if (check.summary) box.append(el("p", "summary", check.summary));
  if (check.fix && check.state === "failed") box.append(el("div", "fix", `需整改：${check.fix}`));
  const bad = check.items.filter((i) => !i.ok);
  const shown = check.state === "failed" ? bad : check.name === "drill" ? check.items : [];
  if (shown.length) {
    const list = el("ul");
    for (const item of shown) list.append(el("li", item.ok ? "" : "bad", `${item.label}：${item.detail}`));
    box.append(list);
  }
  return box;
}

function renderShots(run) {
  const shots = $("shots");
  if (shots.dataset.run === run.id) return;  // built once per run: the operator's choices stay
  shots.dataset.run = run.id;
  shots.replaceChildren();
  state.chosen = {};
  for (const camera of run.cameras) {
    const box = el("div", "shot");
    box.dataset.channel = camera.id;
    if (camera.snapshot_url) {
      const img = el("img");
      img.alt = camera.name;
      img.src = camera.snapshot_url;
      box.append(img);
    } else {
      box.append(el("p", "error", camera.online ? "没有取到画面" : "摄像机离线"));
    }
    box.append(el("div", "name", camera.name || camera.id));
    const select = el("select");
    select.append(el("option", null, "请选择区域"));
    select.firstChild.value = "";
    for (const area of state.areas) {
      const option = el("option", null, `${area.label}${area.police ? "（公安可见）" : ""}`);
      option.value = area.value;
      select.append(option);
    }
    select.value = camera.confirmed_area || "";
    if (camera.confirmed_area) state.chosen[camera.id] = camera.confirmed_area;
    select.addEventListener("change", () => {
      if (select.value) state.chosen[camera.id] = select.value;
      else delete state.chosen[camera.id];
    });
    box.append(select);
    shots.append(box);
  }
}

function render(run) {
  state.run = run;
  $("run").hidden = false;
  $("run-title").textContent = `${run.kindergarten_name} · 验收人 ${run.started_by} · ${when(run.started_at)}`;
  $("run-state").textContent = run.state_label;
  $("run-state").className = `verdict ${run.state}`;
  $("checks").replaceChildren(...run.checks.map(renderCheck));
  const areaStep = run.state === "confirm_areas" || run.state === "drill";
  $("areas").hidden = !areaStep;
  if (areaStep) renderShots(run);
  $("confirm").textContent = run.state === "drill" ? "更正区域" : "确认区域并开始报警演练";
  const drill = run.checks.find((c) => c.name === "drill");
  $("press").hidden = !(run.state === "drill" && !run.drill_alarm_id && drill && drill.state === "running");
  $("press-wait").textContent = run.drill_waiting_since ? `（等待中，自 ${when(run.drill_waiting_since)}）` : "";
  $("finish").hidden = $("abort").hidden = run.finished;
  $("report-link").hidden = !run.report_url;
  if (run.report_url) $("report-link").href = run.report_url;
  $("start").disabled = !run.finished;
}

async function poll() {
  if (!state.run) return;
  try {
    const run = await getJson(`/api/acceptance/${state.run.id}`);
    render(run);
    if (run.finished) {
      clearInterval(state.timer);
      state.timer = null;
      await loadStanding();
      await loadOverdue();
    }
  } catch (err) {
    showError(err.message);
  }
}

function follow(runId) {
  state.run = { id: runId };
  if (state.timer) clearInterval(state.timer);
  state.timer = setInterval(poll, POLL_MS);
  poll();
}

async function start() {
  showError("");
  try {
    const run = await postJson("/api/acceptance", { kindergarten_id: $("kindergarten").value });
    render(run);
    follow(run.id);
  } catch (err) {
    showError(`无法开始验收：${err.message}`);
  }
}

async function act(path, body) {
  showError("");
  try {
    render(await postJson(`/api/acceptance/${state.run.id}/${path}`, body));
    poll();
  } catch (err) {
    showError(err.message);
  }
}

async function main() {
  if (!(await requireUser((err) => showError(`服务不可用：${err.message || err}`)))) return;
  $("start").addEventListener("click", start);
  $("confirm").addEventListener("click", () => act("areas", { areas: state.chosen }));
  $("finish").addEventListener("click", () => act("finish", {}));
  $("abort").addEventListener("click", () => act("abort", {}));
  $("district").addEventListener("change", () => loadKindergartens().catch((err) => showError(err.message)));
  $("kindergarten").addEventListener("change", () => loadStanding());
  try {
    state.areas = (await getJson("/api/acceptance-areas")).items;
    await loadDistricts();
    await loadKindergartens();
  } catch (err) {
    showError(err.message);
  }
  await loadOverdue();
  window.kgwAcceptance = state;
}

main();
