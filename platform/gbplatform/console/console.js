// 幼儿园视频监控 console: list cameras (GET /api/channels), play one over WebRTC
// (POST /api/channels/{id}/webrtc, one round trip, no trickle ICE).
// /live/{channel_id} opens straight into that channel. No build step, no external URLs.
// Alarms: GET /api/alarms for the list, the WebSocket /api/alarms/ws for live events
// (new alarm: sound + flash), acknowledge / resolve by the named operator.
"use strict";

const AREAS = {
  entrance: "出入口", perimeter: "周界", classroom: "教室", dormitory: "寝室",
  playground: "操场", kitchen: "厨房", corridor: "走廊", other: "其他",
};
const $ = (id) => document.getElementById(id);
let pc = null;

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function setStatus(text) { $("status").textContent = text; }

function isCamera(ch) { return ch.id.length === 20 && ch.id.slice(10, 13) === "131"; }

async function loadChannels() {
  const resp = await fetch("/api/channels?limit=200");
  if (!resp.ok) throw new Error(`加载摄像机列表失败: HTTP ${resp.status}`);
  const page = await resp.json();
  const list = $("channels");
  list.replaceChildren();
  const online = page.items.filter((c) => c.online).length;
  $("list-summary").textContent = `共 ${page.total} 路，显示 ${page.items.length} 路，在线 ${online} 路`;
  for (const ch of page.items) {
    const li = document.createElement("li");
    li.dataset.id = ch.id;
    const name = document.createElement("span");
    name.textContent = ch.name || ch.id;
    name.title = ch.id;
    const area = document.createElement("span");
    area.className = "area";
    area.textContent = (AREAS[ch.area] || ch.area || "") + (isCamera(ch) ? "" : " · 非视频");
    const state = document.createElement("span");
    state.className = ch.online ? "online" : "offline";
    state.textContent = ch.online ? "在线" : "离线";
    li.append(name, area, state);
    li.addEventListener("click", () => {
      history.pushState(null, "", `/live/${ch.id}`);
      play(ch.id, ch.name);
    });
    list.append(li);
  }
}

function waitIceComplete(conn, timeoutMs) {
  if (conn.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); conn.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (conn.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);  // send what we have rather than hang
    conn.addEventListener("icegatheringstatechange", check);
  });
}

async function play(channelId, name) {
  showError("");
  for (const li of $("channels").children) li.classList.toggle("active", li.dataset.id === channelId);
  $("current").textContent = name ? `${name} (${channelId})` : channelId;
  if (pc) { pc.close(); pc = null; }
  const video = $("video");
  video.srcObject = null;
  setStatus("连接中…");
  const conn = new RTCPeerConnection({ iceServers: [] });
  pc = conn;
  try {
    conn.addTransceiver("video", { direction: "recvonly" });
    conn.addEventListener("track", (ev) => {
      video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      video.play().catch((err) => showError(`无法自动播放: ${err.message}`));
    });
    conn.addEventListener("connectionstatechange", () => {
      if (pc !== conn) return;
      const labels = { connected: "播放中", failed: "连接失败", disconnected: "连接中断", closed: "已关闭" };
      setStatus(labels[conn.connectionState] || conn.connectionState);
      if (conn.connectionState === "failed") showError("WebRTC 连接失败");
    });
    await conn.setLocalDescription(await conn.createOffer());
    await waitIceComplete(conn, 3000);
    const resp = await fetch(`/api/channels/${encodeURIComponent(channelId)}/webrtc`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: conn.localDescription.sdp }),
    });
    const text = await resp.text();
    if (!resp.ok) throw new Error(`网关拒绝 (HTTP ${resp.status}): ${text}`);
    if (pc !== conn) return;  // another channel was chosen meanwhile
    await conn.setRemoteDescription({ type: "answer", sdp: JSON.parse(text).sdp });
  } catch (err) {
    if (pc === conn) {
      setStatus("播放失败");
      showError(`播放 ${channelId} 失败: ${err.message || err}`);
      conn.close();
      pc = null;
    }
  }
}

function channelFromPath() {
  const m = location.pathname.match(/^\/live\/([0-9A-Za-z]+)\/?$/);
  return m ? m[1] : null;
}

async function main() {
  const first = channelFromPath();
  if (first) play(first);  // straight into the video; the list loads alongside
  try {
    await loadChannels();
  } catch (err) {
    showError(err.message || String(err));
  }
  const current = channelFromPath();
  if (!current) return;
  for (const li of $("channels").children) {
    li.classList.toggle("active", li.dataset.id === current);
    if (li.dataset.id === current) $("current").textContent = `${li.firstChild.textContent} (${current})`;
  }
}

// --- alarms ------------------------------------------------------------------------------

const STATES = { new: "新报警", delivered: "已送达", acknowledged: "已确认", resolved: "已处置" };
const alarms = new Map();  // id -> alarm JSON, newest first in the list

function operatorName() {
  const name = $("operator").value.trim();
  if (!name) {
    $("operator").focus();
    throw new Error("请先填写值班员姓名");
  }
  localStorage.setItem("kgw-operator", name);
  return name;
}

function showAlarmError(text) {
  const el = $("alarm-error");
  el.textContent = text;
  el.hidden = !text;
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
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = `${alarm.kind_name} · ${alarm.kindergarten_name || alarm.kindergarten_id || alarm.device_id}`;
  if (alarm.escalated_at) {
    const esc = document.createElement("span");
    esc.className = "escalated";
    esc.textContent = "已升级至市级";
    title.append(esc);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = alarm.resolved_by ? ` · 处置人 ${alarm.resolved_by}` : alarm.acknowledged_by ? ` · 确认人 ${alarm.acknowledged_by}` : "";
  meta.textContent = `${formatTime(alarm.received_at)} · ${alarm.district_name} · 优先级 ${alarm.priority ?? "?"} · ` +
    `${STATES[alarm.state] || alarm.state}${who}`;
  const actions = document.createElement("div");
  if (alarm.live_channel_id) {
    const live = document.createElement("button");
    live.textContent = "查看现场";
    live.addEventListener("click", () => {
      history.pushState(null, "", `/live/${alarm.live_channel_id}`);
      play(alarm.live_channel_id, `${alarm.kindergarten_name} 出入口`);
    });
    actions.append(live);
  }
  if (alarm.state === "new" || alarm.state === "delivered") {
    const ack = document.createElement("button");
    ack.className = "ack";
    ack.textContent = "确认";
    ack.addEventListener("click", () => act(alarm.id, "ack"));
    actions.append(ack);
  }
  if (alarm.state !== "resolved") {
    const done = document.createElement("button");
    done.className = "resolve";
    done.textContent = "处置完毕";
    done.addEventListener("click", () => act(alarm.id, "resolve"));
    actions.append(done);
  }
  li.replaceChildren(title, meta, actions);
  if (alarm.has_snapshot) {
    const img = document.createElement("img");
    img.alt = "报警时出入口画面";
    img.src = `/api/alarms/${alarm.id}/snapshot.jpg`;
    li.append(img);
  }
  return li;
}

function upsertAlarm(alarm, fresh) {
  const known = alarms.get(alarm.id);
  if (known && known.has_snapshot) alarm.has_snapshot = true;
  alarms.set(alarm.id, alarm);
  const li = renderAlarm(alarm);
  if (!li.parentNode) {
    if (fresh) li.classList.add("fresh");
    $("alarms").prepend(li);
  }
  const open = [...alarms.values()].filter((a) => a.state === "new" || a.state === "delivered").length;
  $("alarm-count").textContent = open ? `（${open} 条待确认）` : "";
}

async function act(id, action) {
  showAlarmError("");
  try {
    const user = operatorName();
    const resp = await fetch(`/api/alarms/${encodeURIComponent(id)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
    upsertAlarm(body, false);
  } catch (err) {
    showAlarmError(`操作失败: ${err.message || err}`);
  }
}

async function loadAlarms() {
  const resp = await fetch("/api/alarms?limit=50");
  if (!resp.ok) throw new Error(`加载报警失败: HTTP ${resp.status}`);
  const page = await resp.json();
  for (const alarm of page.items.reverse()) upsertAlarm(alarm, false);
}

function connectAlarms(delay) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/alarms/ws`);
  ws.addEventListener("open", () => { $("alarm-link").textContent = "报警已连接"; delay = 1000; });
  ws.addEventListener("message", (ev) => {
    const event = JSON.parse(ev.data);
    if (event.type === "alarm") {
      upsertAlarm(event.alarm, true);
      beep();
    } else if (event.type === "updated" || event.type === "escalated") {
      upsertAlarm(event.alarm, event.type === "escalated");
      if (event.type === "escalated") beep();
    } else if (event.type === "snapshot" && alarms.has(event.alarm_id)) {
      const alarm = alarms.get(event.alarm_id);
      alarm.has_snapshot = true;
      upsertAlarm(alarm, false);
    }
  });
  ws.addEventListener("close", () => {
    $("alarm-link").textContent = "报警连接断开，重连中…";
    setTimeout(() => { loadAlarms().catch(() => {}); connectAlarms(Math.min(delay * 2, 15000)); }, delay);
  });
}

$("operator").value = localStorage.getItem("kgw-operator") || "";
window.addEventListener("popstate", () => { const id = channelFromPath(); if (id) play(id); });
main();
loadAlarms().catch((err) => showAlarmError(err.message || String(err)));
connectAlarms(1000);
