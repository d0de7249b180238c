// The right panel: alarms (GET /api/alarms, then the WebSocket /api/alarms/ws with reconnect),
// a sound and a flash for each new or escalated one, acknowledge / resolve (the server records
// the logged-in user), 查看现场 plays the alarm's live channel and opens it in the tree, and the
// 全部 / 未处理 filter. An unverified alarm (not from the device's registered address) shows
// 未验证 with the reason: it is held from the police until the device re-registers from that
// address or a permitted user presses 确认真实 (POST /api/alarms/{id}/verify; the server decides
// who may). Repeats a rate limit collapsed into an alarm show as 重复 N 次.
// A drill (验收演练, alarm.drill) shows 演练: no sound, no popup, not counted as 待确认.
// A new or escalated alarm also pops up (alarm-popup.js) until acknowledged or closed;
// 回放报警前30秒 plays the entrance camera's recording from 30 s before the alarm (playback.js).

import { getJson, postJson } from "./api.js";
import { $, el } from "./dom.js";
import { closeAlarmPopup, openAlarmPopup } from "./alarm-popup.js";
import { playInGrid } from "./grid.js";
import { can } from "./limits.js";
import { openPlayback } from "./playback.js";
import { reveal } from "./tree.js";

const STATES = { new: "新报警", delivered: "已送达", acknowledged: "已确认", resolved: "已处置" };
const UNVERIFIED = {
  address_mismatch: "来源地址与注册地址不一致",
  not_registered: "设备未注册",
};
const alarms = new Map();  // id -> alarm JSON, newest first in the list
let mayReplay = true;      // the role may play back (limits.js, asked once logged in); the server checks anyway

export function showAlarmError(text) {
  const box = $("alarm-error");
  box.textContent = text;
  box.hidden = !text;
}

function beep() {
  // A short two-tone alert made on the spot (no sound file to fetch); browsers may
  // keep audio off until the user has clicked the page once.
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    [880, 660, 880].forEach((freq, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = freq;
      gain.gain.value = 0.2;
      osc.connect(gain).connect(ctx.destination);
      osc.start(ctx.currentTime + i * 0.25);
      osc.stop(ctx.currentTime + i * 0.25 + 0.2);
    });
  } catch (err) { /* no audio: the flashing entry still shows */ }
}

function formatTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString("zh-CN", { hour12: false });
}

function renderAlarm(alarm) {
  let li = document.querySelector(`#alarms li[data-id="${alarm.id}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.id = alarm.id;
  }
  li.className = `state-${alarm.state}` + (li.classList.contains("fresh") ? " fresh" : "");
  const title = el("div", "title", titleText(alarm));
  li.classList.toggle("drill", alarm.drill === true);
  if (alarm.drill) {
    // A drill (验收演练): shown so staff see the installation works, but nobody is dispatched.
    const badge = el("span", "drill", "演练");
    badge.title = "验收演练报警：不出警、不升级、不计入报警统计";
    title.prepend(badge);
  }
  if (alarm.verified === false) {
    const reason = UNVERIFIED[alarm.unverified_reason] || alarm.unverified_reason || "来源未验证";
    const badge = el("span", "unverified", `未验证：${reason}`);
    badge.title = `来源 ${alarm.source_address || "未知"}；确认前不推送公安`;
    title.append(badge);
  }
  if (alarm.escalated_at) {
    const esc = el("span", "escalated", "已升级");
    esc.title = `已升级至市级 ${formatTime(alarm.escalated_at)}`;
    title.append(esc);
  }
  if (alarm.repeats > 0) {
    const rep = el("span", "repeats", `重复 ${alarm.repeats} 次`);
    if (alarm.last_repeat_at) rep.title = `最近一次 ${formatTime(alarm.last_repeat_at)}`;
    title.append(rep);
  }
  const meta = el("div", "meta", metaText(alarm));
  const actions = el("div", "actions");
  actions.append(...actionButtons(alarm));
  li.replaceChildren(title, meta, actions);
  if (alarm.has_snapshot) {
    const img = document.createElement("img");
    img.alt = "报警时出入口画面";
    img.loading = "lazy";
    img.src = `/api/alarms/${alarm.id}/snapshot.jpg`;
    li.append(img);
  }
  return li;
}

function titleText(alarm) {
  return `${alarm.kind_name} · ${alarm.kindergarten_name || alarm.kindergarten_id || alarm.device_id}`;
}

function metaText(alarm) {
  const who = alarm.resolved_by ? ` · 处置人 ${alarm.resolved_by}` : alarm.acknowledged_by ? ` · 确认人 ${alarm.acknowledged_by}` : "";
  return `${formatTime(alarm.received_at)} · ${alarm.district_name} · 优先级 ${alarm.priority ?? "?"} · ` +
    `${STATES[alarm.state] || alarm.state}${who}`;
}

// The alarm's buttons (the list entry and the popup each get their own).
function actionButtons(alarm, fromPopup) {
  const actions = [];
  const done = () => { if (fromPopup) closeAlarmPopup(alarm.id); };
  if (alarm.live_channel_id) {
    const live = el("button", "live", "查看现场");
    live.type = "button";
    live.addEventListener("click", () => {
      done();
      playInGrid(alarm.live_channel_id, `${alarm.kindergarten_name || alarm.kindergarten_id || ""} 出入口`);
      reveal(alarm.district_code, alarm.kindergarten_id, alarm.live_channel_id).catch(() => {});
    });
    actions.push(live);
    if (mayReplay && Number.isFinite(alarm.received_ts)) {
      // The alarm's time is the gateway's receipt (received_ts, epoch s): the device's own clock
      // (device_time) is only judged against it, and has no time zone.
      const replay = el("button", "replay", "回放报警前30秒");
      replay.type = "button";
      replay.title = "回放出入口摄像机报警前 30 秒起的录像";
      replay.addEventListener("click", () => {
        done();
        openPlayback(alarm.live_channel_id, `${alarm.kindergarten_name || alarm.kindergarten_id || ""} 出入口`,
          Math.floor(alarm.received_ts) - 30);
      });
      actions.push(replay);
    }
  }
  if (alarm.verified === false && alarm.state !== "resolved") {
    const verify = el("button", "verify", "确认真实");
    verify.type = "button";
    verify.title = "确认为真实报警：推送公安";
    verify.addEventListener("click", () => verifyAlarm(alarm.id));
    actions.push(verify);
  }
  if (alarm.state === "new" || alarm.state === "delivered") {
    const ack = el("button", "ack", "确认");
    ack.type = "button";
    ack.addEventListener("click", () => act(alarm.id, "ack"));
    actions.push(ack);
  }
  if (alarm.state !== "resolved") {
    const resolve = el("button", "resolve", "处置完毕");
    resolve.type = "button";
    resolve.addEventListener("click", () => act(alarm.id, "resolve"));
    actions.push(resolve);
  }
  return actions;
}

// A new or escalated alarm pops up while it waits for someone; handled ones leave the popup.
// A drill never pops up (nor sounds): it only shows in the list with its 演练 badge.
function popUp(alarm, open) {
  if (alarm.drill || (alarm.state !== "new" && alarm.state !== "delivered")) closeAlarmPopup(alarm.id);
  else if (open) openAlarmPopup(alarm, titleText(alarm), metaText(alarm), actionButtons(alarm, true));
}

function updateAlarmCount() {
  const open = [...alarms.values()].filter((a) => !a.drill && (a.state === "new" || a.state === "delivered")).length;
  $("alarm-count").textContent = open ? `（${open} 条待确认）` : "";
  const onlyOpen = $("alarms").classList.contains("open-only");
  const visible = [...alarms.values()].filter((a) => !onlyOpen || a.state !== "resolved").length;
  $("alarm-empty").hidden = visible > 0;
  $("alarm-empty").textContent = onlyOpen ? "没有未处理的报警" : "暂无报警";
}

function upsertAlarm(alarm, fresh) {
  const known = alarms.get(alarm.id);
  if (known && known.has_snapshot) alarm.has_snapshot = true;
  alarms.set(alarm.id, alarm);
  popUp(alarm, false);
  const li = renderAlarm(alarm);
  if (!li.parentNode) {
    if (fresh) li.classList.add("fresh");
    $("alarms").prepend(li);
  }
  updateAlarmCount();
}

async function act(id, action) {
  showAlarmError("");
  try {
    upsertAlarm(await postJson(`/api/alarms/${encodeURIComponent(id)}/${action}`, {}), false);
  } catch (err) {
    showAlarmError(`操作失败: ${err.message || err}`);
  }
}

// 确认真实: the authenticated user confirms the alarm; the server checks the role and district.
async function verifyAlarm(id) {
  showAlarmError("");
  try {
    const resp = await fetch(`/api/alarms/${encodeURIComponent(id)}/verify`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({}),
    });
    const body = await resp.json();
    if (resp.status === 403) throw new Error("无权确认此报警");
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
    upsertAlarm(body, false);
  } catch (err) {
    showAlarmError(`确认失败: ${err.message || err}`);
  }
}

export async function loadAlarms() {
  mayReplay = await can("playback");
  const page = await getJson("/api/alarms?limit=50");
  for (const alarm of page.items.reverse()) upsertAlarm(alarm, false);
  updateAlarmCount();
}

export function connectAlarms(delay) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/alarms/ws`);
  const link = $("alarm-link");
  ws.addEventListener("open", () => { link.textContent = "报警已连接"; link.className = "alarm-state up"; delay = 1000; });
  ws.addEventListener("message", (ev) => {
    const event = JSON.parse(ev.data);
    if (event.type === "alarm") {
      upsertAlarm(event.alarm, true);
      popUp(event.alarm, true);
      if (!event.alarm.drill) beep();  // a drill: no siren
    } else if (event.type === "updated" || event.type === "escalated") {
      upsertAlarm(event.alarm, event.type === "escalated");
      if (event.type === "escalated" && !event.alarm.drill) { popUp(event.alarm, true); beep(); }
    } else if (event.type === "snapshot" && alarms.has(event.alarm_id)) {
      const alarm = alarms.get(event.alarm_id);
      alarm.has_snapshot = true;
      upsertAlarm(alarm, false);
    }
  });
  ws.addEventListener("close", () => {
    link.textContent = "报警连接断开，重连中…";
    link.className = "alarm-state down";
    setTimeout(() => { loadAlarms().catch(() => {}); connectAlarms(Math.min(delay * 2, 15000)); }, delay);
  });
}

function setAlarmFilter(filter) {
  $("alarms").classList.toggle("open-only", filter === "open");
  for (const b of $("alarm-filter").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.filter === filter));
  localStorage.setItem("kgw-alarm-filter", filter);
  updateAlarmCount();
}

// The 全部 / 未处理 buttons, starting with the filter last chosen on this browser.
export function setupAlarmFilter() {
  for (const b of $("alarm-filter").querySelectorAll("button")) b.addEventListener("click", () => setAlarmFilter(b.dataset.filter));
  setAlarmFilter(localStorage.getItem("kgw-alarm-filter") === "open" ? "open" : "all");
}
