// 幼儿园视频监控 console (zh-CN), served by every kgw service (gateway, district,
// municipal or police platform) from its own API only, so each shows what it received.
// This module wires the others together and starts the page:
//
//   header: service.js  — who this service is (ID, role from /healthz), a status line;
//   left:   tree.js, tree-view.js, tree-model.js — the lazily loaded tree 行政区划 → 幼儿园 → 通道;
//   centre: grid.js, player.js — 1/4/9/16 cells, one RTCPeerConnection each;
//           talk.js — hold 喊话 to speak to the selected cell's kindergarten (voice broadcast);
//           /live/{channel_id} opens that channel straight into cell 1;
//   right:  alarms.js — the alarm list over the WebSocket, acknowledge / resolve, 查看现场,
//           回放报警前30秒; alarm-popup.js pops new alarms up.
//   patrol.js — 轮巡: the grid cycles through a group, the next page pre-opened (limits.js: caps);
//   playback.js, timeline.js — 录像回放: a camera's day of recordings, playback, download.
//   audit.js — 审计日志 (who viewed what), opened from the header, 市级管理员 only.
//   login:  auth.js — /api/me; without a session only the login form shows; 用户名 · 角色, 退出登录.
//   shared: api.js (JSON API, paging), dom.js (DOM helpers), codes.js (GB/T 28181 codes).
//
// Native ES modules, no build step, no external URLs. window.kgwConsole exposes state for tests.

import { setupAudit } from "./audit.js";
import { connectAlarms, loadAlarms, setupAlarmFilter, showAlarmError } from "./alarms.js";
import { requireUser } from "./auth.js";
import { cells, layout, nameCells, playInGrid, selectCell, selected, setLayout, setupGrid } from "./grid.js";
import { patrol, setupPatrol, startPatrol, stopPatrol } from "./patrol.js";
import { openPlayback, playback, setupPlayback } from "./playback.js";
import { onPlayingChange, peerLog } from "./player.js";
import { loadHealth } from "./service.js";
import { onChannelsLoaded, tree } from "./tree-model.js";
import { refreshTree, setupTree } from "./tree.js";
import { markPlaying } from "./tree-view.js";
import { setupTalk, talkState } from "./talk.js";
import { $ } from "./dom.js";

const REFRESH_MS = 30000;  // tree counts and service summary

function channelFromPath() {
  const m = location.pathname.match(/^\/live\/([0-9A-Za-z]+)\/?$/);
  return m ? m[1] : null;
}

function main() {
  onPlayingChange(markPlaying);   // the tree marks the channels the grid plays
  onChannelsLoaded(nameCells);    // cells opened by ID take their names from the tree
  setupGrid();
  setupTree();
  const first = channelFromPath();
  setLayout(first ? 1 : Number(localStorage.getItem("kgw-layout")) || 4);
  selectCell(0);
  if (first) playInGrid(first, "", 0);  // straight into cell 1; the tree loads alongside
  setupAlarmFilter();
  refreshTree().then(loadHealth);
  setInterval(() => { refreshTree(); loadHealth(); }, REFRESH_MS);
  loadAlarms().catch((err) => showAlarmError(err.message || String(err)));
  connectAlarms(1000);
  setupAudit();
  setupPatrol();
  setupPlayback(() => cells[selected]?.channelId || cells.slice(0, layout).find((c) => c.channelId)?.channelId || null);
}

window.kgwConsole = {
  cells, tree, peerLog,
  talk: talkState,
  layout: () => layout,
  selected: () => selected,
  play: playInGrid,
  refresh: refreshTree,
  setLayout,
  patrol, startPatrol, stopPatrol,
  playback, openPlayback,
};

async function start() {
  const user = await requireUser(() => {
    $("status").textContent = "服务不可用";
  });
  if (!user) return;
  main();
  setupTalk(user);
}

start();
