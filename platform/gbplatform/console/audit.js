// 审计日志: who viewed what, when, from where and for how long (GET /api/audit, 市级管理员 only).
// A header button opens the page over the console; filters by 用户 / 操作 / 对象 / time, newest
// first, 50 a page, and an export link (GET /api/audit/export.csv with the same filters).
// Everything the server sends is shown with textContent only.

import { getJson } from "./api.js";
import { $, el } from "./dom.js";

const PAGE = 50;
const ACTIONS = {
  live_view: "实时视频", webrtc_session: "网页播放", snapshot: "抓图", alarm_snapshot: "报警抓图",
  alarm_ack: "确认报警", alarm_resolve: "处置报警", alarm_verify: "核实报警", delivery_retry: "重发报警",
  device_query: "设备查询", provisioning: "资料录入", area_confirm: "区域确认", user_change: "用户变更",
  token_change: "令牌变更", config_change: "配置变更", access_denied: "越权被拒", login: "登录",
  login_failed: "登录失败", logout: "退出", upper_live_view: "上级平台调阅",
  ptz_control: "云台控制", device_control: "设备控制", record_search: "录像检索", playback: "录像回放",
  download: "录像下载", broadcast: "语音喊话", upper_playback: "上级平台回放", upper_download: "上级平台下载", acceptance: "验收",
};
const OUTCOMES = { ok: "成功", started: "开始", ended: "结束", closed: "结束", failed: "失败", gateway_stopping: "服务停止" };
const COLUMNS = ["时间", "用户", "角色", "来源地址", "操作", "对象", "结果", "时长"];

let offset = 0;

function outcomeText(outcome) {
  if (OUTCOMES[outcome]) return OUTCOMES[outcome];
  const m = /^http_(\d+)$/.exec(outcome);
  if (m) return m[1] === "403" ? "拒绝 (403)" : `失败 (${m[1]})`;
  return outcome;
}

function durationText(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `${seconds.toFixed(1)} 秒`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m} 分 ${Math.round(seconds % 60)} 秒` : `${Math.floor(m / 60)} 小时 ${m % 60} 分`;
}

function field(label, input) {
  const wrap = el("label", "audit-field", label);
  wrap.append(input);
  return wrap;
}

function input(id, type, placeholder) {
  const node = el("input");
  node.id = id;
  node.type = type;
  if (placeholder) node.placeholder = placeholder;
  return node;
}

function build() {
  const panel = el("section", "audit-panel");
  panel.id = "audit-panel";
  panel.hidden = true;
  panel.setAttribute("aria-label", "审计日志");

  const head = el("div", "panel-head");
  head.append(el("h2", "", "审计日志"));
  const close = el("button", "", "关闭");
  close.type = "button";
  close.addEventListener("click", () => { panel.hidden = true; });
  head.append(close);

  const filters = el("form", "audit-filters");
  const action = el("select");
  action.id = "audit-action";
  action.append(new Option("全部操作", ""));
  for (const [value, text] of Object.entries(ACTIONS)) action.append(new Option(text, value));
  filters.append(
    field("用户 ", input("audit-actor", "text", "用户名")),
    field("操作 ", action),
    field("对象 ", input("audit-target", "text", "通道/报警/设备编码")),
    field("自 ", input("audit-since", "datetime-local")),
    field("至 ", input("audit-until", "datetime-local")),
  );
  const search = el("button", "", "查询");
  search.type = "submit";
  const exportLink = el("a", "audit-export", "导出 CSV");
  exportLink.id = "audit-export";
  exportLink.href = "/api/audit/export.csv";
  filters.append(search, exportLink);
  filters.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; load(); });
  filters.addEventListener("change", () => { exportLink.href = `/api/audit/export.csv?${query(false)}`; });

  const error = el("p", "error");
  error.id = "audit-error";
  error.setAttribute("role", "alert");
  error.hidden = true;

  const table = el("table", "audit-table");
  const headRow = el("tr");
  for (const name of COLUMNS) headRow.append(el("th", "", name));
  const thead = el("thead");
  thead.append(headRow);
  const body = el("tbody");
  body.id = "audit-rows";
  table.append(thead, body);

  const pager = el("div", "audit-pager");
  const prev = el("button", "", "上一页");
  prev.type = "button";
  prev.id = "audit-prev";
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  const next = el("button", "", "下一页");
  next.type = "button";
  next.id = "audit-next";
  next.addEventListener("click", () => { offset += PAGE; load(); });
  const summary = el("span", "summary");
  summary.id = "audit-summary";
  pager.append(prev, summary, next);

  panel.append(head, filters, error, el("div", "audit-scroll"), pager);
  panel.querySelector(".audit-scroll").append(table);
  document.body.append(panel);
  return panel;
}

function epoch(id) {
  const value = $(id).value;
  return value ? String(new Date(value).getTime() / 1000) : "";
}

function query(paged) {
  const params = new URLSearchParams();
  const pairs = [["actor", $("audit-actor").value.trim()], ["action", $("audit-action").value],
    ["target", $("audit-target").value.trim()], ["since", epoch("audit-since")], ["until", epoch("audit-until")]];
  for (const [key, value] of pairs) if (value) params.set(key, value);
  if (paged) { params.set("offset", String(offset)); params.set("limit", String(PAGE)); }
  return params.toString();
}

function row(record) {
  const tr = el("tr");
  if (record.police) tr.className = "police";
  const time = new Date(record.at);
  const actor = el("td", "", record.actor || "（匿名）");
  if (record.via === "upper_platform") actor.title = `上级平台 ${record.detail.upper || ""}`;
  const role = el("td", "", record.role_name || record.role);
  if (record.police) role.append(el("span", "police-badge", "公安"));
  tr.append(
    el("td", "", isNaN(time) ? record.at : time.toLocaleString("zh-CN", { hour12: false })),
    actor,
    role,
    el("td", "", record.source),
    el("td", "", ACTIONS[record.action] || record.action),
    el("td", "mono", record.target),
    el("td", "", outcomeText(record.outcome)),
    el("td", "", durationText(record.duration)),
  );
  tr.title = `#${record.seq} ${record.via || ""}`;
  return tr;
}

async function load() {
  const error = $("audit-error");
  try {
    const page = await getJson(`/api/audit?${query(true)}`);
    const rows = $("audit-rows");
    rows.replaceChildren(...page.items.map(row));
    const last = Math.min(page.total, offset + page.items.length);
    $("audit-summary").textContent = page.total ? `第 ${offset + 1}–${last} 条，共 ${page.total} 条` : "没有记录";
    $("audit-prev").disabled = offset === 0;
    $("audit-next").disabled = last >= page.total;
    error.hidden = true;
  } catch (err) {
    const text = err.message || String(err);
    error.textContent = text.includes("HTTP 403") ? "仅市级管理员可查看审计日志" : text;
    error.hidden = false;
  }
}

export function setupAudit() {
  let panel = null;
  $("audit-open").addEventListener("click", () => {
    panel = panel || build();
    panel.hidden = false;
    offset = 0;
    load();
  });
}
