// 录像回放: one camera's recordings of a day (timeline.js draws them from
// GET /api/channels/{id}/records), played back over WebRTC by the same player as live view
// (player.js, offer to POST /api/playback/{id}/webrtc), with play / pause / speed
// (POST /api/playback/{id}/control) and the recorded time shown (GET /api/playback/{id}:
// position = seconds from the session's start). A click outside the running session's range,
// or after it ended, opens a new session (DELETE the old one). 下载 fetches a selected range as
// an MP4 (POST /api/channels/{id}/downloads, progress from GET /api/downloads/{id}, then the
// file link). The panel covers the live grid; while it is open a camera clicked in the tree is
// played back instead, and patrol holds (kgw-playback on document).

import { getJson, postJson } from "./api.js";
import { $, el } from "./dom.js";
import { cells } from "./grid.js";
import { can, limits } from "./limits.js";
import { closeCell, makeCell, playInCell } from "./player.js";
import { channelName, tree } from "./tree-model.js";
import { DAY, Timeline, dayStartOf, formatClock, formatDateTime, legend } from "./timeline.js";

const POLL_MS = 500;
const SPEEDS = [0.25, 0.5, 1, 2, 4, 8];
const STATES = { starting: "正在打开…", playing: "回放中", paused: "已暂停", ended: "回放结束", failed: "回放失败" };
const END_REASONS = { end_of_file: "录像已播完", device: "设备结束了回放", timeout: "设备无数据" };

export const playback = {
  channelId: null,
  name: "",
  day: 0,
  items: [],
  session: null,       // the API's playback JSON
  polledAt: 0,         // performance.now() of the last poll (the shown time moves on between polls)
  scale: 1,
  poller: null,
  download: null,      // the API's download JSON
  range: null,         // [start, end] selected for download
  loadSeq: 0,
  playSeq: 0,          // the latest playFrom: an older one that finishes late gives its session up
  sessionDay: 0,       // the day the shown recorded time is in
  lastSeek: null,      // the last time asked for (timeline click, alarm replay): diagnostics, tests
};

let timeline = null;
let cell = null;
let suspended = [];  // live cells closed to make room for the playback session (reopened on return)
let allowed = { record_read: true, playback: true, download: true };

async function api(method, url, body) {
  if (method === "POST") return postJson(url, body || {});
  const resp = await fetch(url, { method, headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!resp.ok && resp.status !== 404) throw new Error(`HTTP ${resp.status}`);
  return null;
}

function showPbError(text) {
  const box = $("pb-error");
  box.textContent = text || "";
  box.hidden = !text;
}

// --- the panel ---------------------------------------------------------------------------------

function build() {
  if ($("playback")) return $("playback");
  const panel = el("section", "playback-panel");
  panel.id = "playback";
  panel.setAttribute("aria-label", "录像回放");
  panel.hidden = true;

  const head = el("div", "panel-head");
  const camera = el("span", "pb-camera");
  camera.id = "pb-camera";
  const date = el("input");
  date.id = "pb-date";
  date.type = "date";
  date.title = "日期";
  const back = el("button", "", "返回实时");
  back.id = "pb-close";
  back.type = "button";
  head.append(el("h2", "", "录像回放"), camera, date, back);

  const error = el("p", "error");
  error.id = "pb-error";
  error.setAttribute("role", "alert");
  error.hidden = true;

  cell = makeCell("pb", () => {});
  cell.el.querySelector(".cell-empty").replaceChildren(el("span", "", "在时间轴上点击开始回放"));
  cell.el.querySelector(".cell-close").addEventListener("click", () => endSession());
  const video = el("div", "pb-video");
  video.append(cell.el);

  const controls = el("div", "pb-controls");
  const play = el("button", "", "播放");
  play.id = "pb-play";
  play.type = "button";
  const pauseBtn = el("button", "", "暂停");
  pauseBtn.id = "pb-pause";
  pauseBtn.type = "button";
  const speed = el("select");
  speed.id = "pb-speed";
  speed.title = "倍速";
  for (const s of SPEEDS) {
    const o = el("option", "", `${s}×`);
    o.value = String(s);
    o.selected = s === 1;
    speed.append(o);
  }
  const time = el("span", "pb-time", "--");
  time.id = "pb-time";
  time.title = "正在显示的录像时间";
  const state = el("span", "pb-state");
  state.id = "pb-state";
  state.setAttribute("role", "status");
  const speedLabel = el("label", "", "倍速 ");
  speedLabel.append(speed);
  controls.append(play, pauseBtn, speedLabel, time, state);

  timeline = new Timeline({ onSeek: (t) => playFrom(t), onRange: (a, b) => setRange([a, b]) });
  timeline.el.id = "pb-timeline";
  const summary = el("p", "summary");
  summary.id = "pb-summary";

  const dl = el("div", "pb-download");
  const rangeMode = el("button", "", "选择下载范围");
  rangeMode.id = "pb-range-mode";
  rangeMode.type = "button";
  rangeMode.setAttribute("aria-pressed", "false");
  rangeMode.title = "按下后在时间轴上拖动选择一段录像";
  const range = el("span", "pb-range", "未选择");
  range.id = "pb-range";
  const from = el("input", "pb-range-time");
  from.id = "pb-range-from";
  from.type = "time";
  from.step = "1";
  from.title = "下载起始时间";
  const to = el("input", "pb-range-time");
  to.id = "pb-range-to";
  to.type = "time";
  to.step = "1";
  to.title = "下载结束时间";
  const start = el("button", "", "下载");
  start.id = "pb-download-start";
  start.type = "button";
  start.disabled = true;
  const progress = el("progress");
  progress.id = "pb-progress";
  progress.max = 1;
  progress.value = 0;
  progress.hidden = true;
  const dlState = el("span", "pb-download-state");
  dlState.id = "pb-download-state";
  const link = el("a", "pb-file");
  link.id = "pb-file";
  link.hidden = true;
  dl.append(rangeMode, from, "–", to, range, start, progress, dlState, link);

  panel.append(head, error, video, controls, timeline.el, legend(), summary, dl);
  $("grid-wrap").before(panel);

  back.addEventListener("click", () => closePlayback());
  date.addEventListener("change", () => {
    if (!date.value) return;
    const [y, m, d] = date.value.split("-").map(Number);
    loadDay(Math.floor(new Date(y, m - 1, d).getTime() / 1000));
  });
  play.addEventListener("click", () => resumeOrStart());
  pauseBtn.addEventListener("click", () => control({ action: "pause" }));
  speed.addEventListener("change", () => {
    playback.scale = Number(speed.value);
    if (live()) control({ action: "scale", scale: playback.scale });
  });
  rangeMode.addEventListener("click", () => {
    timeline.rangeMode = !timeline.rangeMode;
    rangeMode.setAttribute("aria-pressed", String(timeline.rangeMode));
  });
  start.addEventListener("click", () => startDownload());
  const typed = () => {  // the range typed as times of the shown day
    const a = secondsOf(from.value);
    const b = secondsOf(to.value);
    setRange(a !== null && b !== null && b > a ? [playback.day + a, playback.day + b] : null, true);
  };
  from.addEventListener("change", typed);
  to.addEventListener("change", typed);
  return panel;
}

function dateValue(day) {
  const d = new Date(day * 1000);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

// Open the panel on `channelId`; with `startAt` (epoch s) play from there at once.
export async function openPlayback(channelId, name, startAt) {
  showPanel();
  if (playback.channelId !== channelId) {
    await endSession();
    setRange(null);
    playback.channelId = channelId;
  }
  playback.name = name || channelName(channelId) || channelId;
  $("pb-camera").textContent = playback.name;
  $("pb-camera").title = channelId;
  showPbError("");
  allowed = { record_read: await can("record_read"), playback: await can("playback"), download: await can("download") };
  $("pb-play").disabled = $("pb-pause").disabled = !allowed.playback;
  $("pb-range-mode").disabled = !allowed.download;
  const day = dayStartOf(startAt ?? Date.now() / 1000);
  const loading = loadDay(day);
  if (startAt !== undefined && startAt !== null) {
    timeline.setCursor(startAt);
    await loading;  // the session's end comes from the segments
    await playFrom(startAt);
  } else {
    await loading;
  }
}

// The panel over the grid (patrol holds: kgw-playback); a camera clicked in the tree is played back.
function showPanel() {
  const panel = build();
  if (!panel.hidden) return;
  panel.hidden = false;
  $("grid-wrap").hidden = true;
  document.dispatchEvent(new CustomEvent("kgw-playback", { detail: { open: true } }));
  tree.onCamera = (node) => openPlayback(node.id, node.name);
  freeSessions();
}

// The hidden grid's sessions count against the server's per-user WebRTC cap: when they leave no
// room for the playback session, they are closed now and reopened by 返回实时.
async function freeSessions() {
  const cap = (await limits()).webrtc_per_user || 4;
  const open = cells.filter((c) => c.pc).length;
  if (open + 1 <= cap) return;
  suspended = cells.filter((c) => c.channelId).map((c) => ({ cell: c, channelId: c.channelId, name: c.name }));
  for (const s of suspended) closeCell(s.cell);
}

export async function closePlayback() {
  await endSession();
  tree.onCamera = null;
  if ($("playback")) $("playback").hidden = true;
  $("grid-wrap").hidden = false;
  for (const s of suspended) if (!s.cell.channelId && cells.includes(s.cell)) playInCell(s.cell, s.channelId, s.name);
  suspended = [];
  document.dispatchEvent(new CustomEvent("kgw-playback", { detail: { open: false } }));
}

// The day's recordings of the camera (all types), drawn on the timeline.
async function loadDay(day) {
  playback.day = day;
  $("pb-date").value = dateValue(day);
  timeline.setDay(day);
  timeline.setCursor(live() ? shownTime() : null);
  const seq = ++playback.loadSeq;
  const summary = $("pb-summary");
  if (!allowed.record_read) {
    summary.textContent = "无权查看录像目录";
    return;
  }
  summary.textContent = "正在查询设备录像…";
  const end = Math.min(day + DAY, Math.ceil(Date.now() / 1000));
  try {
    const body = await getJson(`/api/channels/${encodeURIComponent(playback.channelId)}/records?start=${day}&end=${Math.max(end, day + 1)}&type=all`);
    if (seq !== playback.loadSeq) return;
    playback.items = body.items || [];
    timeline.setSegments(playback.items);
    const alarmCount = playback.items.filter((it) => it.type === "alarm").length;
    summary.textContent = playback.items.length
      ? `共 ${playback.items.length} 段录像（报警 ${alarmCount} 段）${body.complete === false ? `，设备只返回了部分（${playback.items.length}/${body.sum_num}）` : ""}`
      : "当天没有录像";
  } catch (err) {
    if (seq !== playback.loadSeq) return;
    playback.items = [];
    timeline.setSegments([]);
    summary.textContent = "";
    showPbError(`查询录像失败：${err.message || err}`);
  }
}

// --- the session -------------------------------------------------------------------------------

function live() {
  const s = playback.session;
  return s && (s.state === "starting" || s.state === "playing" || s.state === "paused");
}

// The recorded time on screen: the last polled position, moved on by the time since.
function shownTime() {
  const s = playback.session;
  if (!s) return null;
  let at = s.start + (s.position || 0);
  if (s.state === "playing") at += ((performance.now() - playback.polledAt) / 1000) * (s.scale || playback.scale);
  return Math.min(s.end, at);
}

// Where a session from `t` should end: the end of the recorded run holding `t` (segments closer
// than 2 s count as one), else the day's end; and where it starts (a click in a gap: the next
// recording).
function sessionRange(t) {
  const runs = [];
  for (const it of [...playback.items].sort((a, b) => a.start - b.start)) {
    const last = runs[runs.length - 1];
    if (last && it.start <= last[1] + 2) last[1] = Math.max(last[1], it.end);
    else runs.push([it.start, it.end]);
  }
  const run = runs.find((r) => t >= r[0] && t < r[1]) || runs.find((r) => r[0] > t);
  if (!run) return [t, Math.min(playback.day + DAY, Math.max(t + 60, Math.floor(Date.now() / 1000)))];
  return [Math.max(t, run[0]), run[1]];
}

async function playFrom(t) {
  if (!playback.channelId || !allowed.playback) return;
  playback.lastSeek = t;
  showPbError("");
  const s = playback.session;
  if (live() && s.state !== "starting" && t >= s.start && t < s.end) {
    await control({ action: "seek", position: Math.round(t - s.start) });
    return;
  }
  await endSession();
  const [start, end] = sessionRange(Math.floor(t));
  if (end <= start) {
    showPbError("所选时间之后没有录像");
    return;
  }
  const channelId = playback.channelId;
  const seq = ++playback.playSeq;
  playback.sessionDay = dayStartOf(start);
  setState({ state: "starting", start, end, position: 0, scale: playback.scale });
  try {
    const session = await postJson(`/api/channels/${encodeURIComponent(channelId)}/playback`, { start, end });
    if (seq !== playback.playSeq) {  // the user moved on meanwhile
      api("DELETE", `/api/playback/${encodeURIComponent(session.id)}`).catch(() => {});
      return;
    }
    setState(session);
    clearInterval(playback.poller);
    playback.poller = setInterval(poll, POLL_MS);
    if (playback.scale !== 1) control({ action: "scale", scale: playback.scale });
    const current = () => seq === playback.playSeq && playback.session && playback.session.id === session.id;
    const offerUrl = `/api/playback/${encodeURIComponent(session.id)}/webrtc`;
    await playInCell(cell, channelId, `${playback.name} · 回放`, { offerUrl });
    // 429: sessions just closed (freeSessions, a previous playback) are not given back yet.
    for (let n = 0; n < 5 && cell.httpStatus === 429 && current(); n++) {
      await new Promise((r) => setTimeout(r, 1000));
      if (current()) await playInCell(cell, channelId, `${playback.name} · 回放`, { offerUrl });
    }
  } catch (err) {
    if (seq !== playback.playSeq) return;
    setState(null);
    showPbError(`回放失败：${err.message || err}`);
  }
}

async function resumeOrStart() {
  if (live() && playback.session.state === "paused") {
    await control({ action: "play" });
    return;
  }
  if (live()) return;
  const from = timeline.cursor ?? (playback.items[0] ? playback.items[0].start : null);
  if (from === null) showPbError("当天没有录像");
  else await playFrom(from);
}

async function control(body) {
  const s = playback.session;
  if (!s || !s.id || !live()) return;
  try {
    setState(await postJson(`/api/playback/${encodeURIComponent(s.id)}/control`, body));
  } catch (err) {
    showPbError(`操作失败：${err.message || err}`);
  }
}

async function poll() {
  const s = playback.session;
  if (!s || !s.id) return;
  try {
    const fresh = await getJson(`/api/playback/${encodeURIComponent(s.id)}`);
    if (playback.session && playback.session.id === fresh.id) setState(fresh);
  } catch (err) {
    if (playback.session && playback.session.id === s.id) setState({ ...s, state: "ended", end_reason: "gone" });
  }
  if (!live()) {
    clearInterval(playback.poller);
    playback.poller = null;
  }
}

async function endSession() {
  playback.playSeq += 1;
  clearInterval(playback.poller);
  playback.poller = null;
  const s = playback.session;
  playback.session = null;
  if (cell) closeCell(cell);
  showTime();
  if (s && s.id && (s.state === "starting" || s.state === "playing" || s.state === "paused")) {
    await api("DELETE", `/api/playback/${encodeURIComponent(s.id)}`).catch(() => {});
  }
}

function setState(session) {
  playback.session = session;
  playback.polledAt = performance.now();
  const box = $("pb-state");
  if (!session) {
    box.textContent = "";
    box.dataset.state = "";
  } else {
    const reason = session.state === "ended" && session.end_reason ? `（${END_REASONS[session.end_reason] || session.end_reason}）` : "";
    box.textContent = (STATES[session.state] || session.state) + reason;
    box.dataset.state = session.state;
    if (session.id) box.dataset.session = session.id;
  }
  showTime();
}

function showTime() {
  const at = shownTime();
  const label = $("pb-time");
  if (!label) return;
  label.textContent = at === null ? "--" : formatDateTime(Math.floor(at));
  label.dataset.epoch = at === null ? "" : String(Math.floor(at));
  if (at !== null) {
    const day = dayStartOf(at);
    if (live() && day !== playback.sessionDay) {  // played past midnight: the view follows if it showed that day
      if (playback.day === playback.sessionDay) loadDay(day);
      playback.sessionDay = day;
    }
    if (!timeline.drag) timeline.setCursor(at);
  }
}

// --- download ----------------------------------------------------------------------------------

// "HH:MM[:SS]" → seconds into the day, or null.
function secondsOf(text) {
  const m = /^(\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(text || "");
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3] || 0) : null;
}

// The download range (from a drag on the timeline, or typed: `typed` keeps the inputs as they are).
function setRange(range, typed) {
  playback.range = range;
  if (timeline) timeline.setRange(range);
  const label = $("pb-range");
  if (!label) return;
  if (!typed) {
    $("pb-range-from").value = range ? formatClock(range[0]) : "";
    $("pb-range-to").value = range ? formatClock(range[1]) : "";
  }
  label.textContent = range ? `共 ${range[1] - range[0]} 秒` : "未选择";
  $("pb-download-start").disabled = !range || !allowed.download;
}

async function startDownload() {
  const range = playback.range;
  if (!range || !playback.channelId) return;
  const progress = $("pb-progress");
  const state = $("pb-download-state");
  const link = $("pb-file");
  link.hidden = true;
  progress.hidden = false;
  progress.value = 0;
  state.textContent = "正在下载…";
  $("pb-download-start").disabled = true;
  try {
    let job = await postJson(`/api/channels/${encodeURIComponent(playback.channelId)}/downloads`, { start: range[0], end: range[1] });
    playback.download = job;
    while (job.state === "running") {
      progress.value = job.progress || 0;
      state.textContent = `正在下载 ${Math.round((job.progress || 0) * 100)}%`;
      await new Promise((r) => setTimeout(r, 1000));
      if (playback.download !== job) return;  // another download replaced it
      job = await getJson(`/api/downloads/${encodeURIComponent(job.id)}`);
      playback.download = job;
    }
    if (job.state !== "done") throw new Error(job.error || job.state);
    progress.value = 1;
    state.textContent = `下载完成（${((job.bytes || 0) / 1048576).toFixed(1)} MB）`;
    link.href = `/api/downloads/${encodeURIComponent(job.id)}/file`;
    link.textContent = `保存文件 ${job.filename || ""}`;
    if (job.filename) link.download = job.filename;
    link.hidden = false;
  } catch (err) {
    state.textContent = "";
    progress.hidden = true;
    showPbError(`下载失败：${err.message || err}`);
  } finally {
    $("pb-download-start").disabled = !playback.range || !allowed.download;
  }
}

// The 录像回放 button: the selected cell's camera (or the first playing one).
export function setupPlayback(selectedChannel) {
  $("playback-open").addEventListener("click", () => {
    const channelId = selectedChannel();
    if (!channelId) {
      showPanel();
      if (!playback.channelId) $("pb-camera").textContent = "在左侧目录中点击摄像机";
      return;
    }
    openPlayback(channelId);
  });
  setInterval(() => { if (playback.session) showTime(); }, 250);
  window.addEventListener("pagehide", () => {
    const s = playback.session;
    if (s && s.id) fetch(`/api/playback/${encodeURIComponent(s.id)}`, { method: "DELETE", keepalive: true, credentials: "same-origin" });
  });
}
