// ONVIF 发现 on the RTSP page: search the local network (WS-Discovery, POST /api/onvif/discover),
// read a camera's profiles with its login (POST /api/onvif/profiles), and put the chosen profile's
// RTSP address and login into the 添加摄像机 form, where the operator picks kindergarten, name and
// area. Text from cameras goes through textContent only; the password is sent once, never shown.

import { postJson } from "./api.js";
import { $, el } from "./dom.js";

function status(text, isError = false) {
  const node = $("onvif-status");
  node.textContent = text;
  node.className = isError ? "error" : "hint";
}

function field(label, input) {
  const wrap = el("label", "", label);
  wrap.append(input);
  return wrap;
}

function input(id, attrs = {}) {
  const node = el("input");
  node.id = id;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function button(id, text, type = "button") {
  const node = el("button", "", text);
  node.id = id;
  node.type = type;
  return node;
}

function build(section) {
  const search = el("form", "rtsp-form");
  search.id = "onvif-search";
  search.append(
    field("摄像机 IP（可选，留空则在本地网络组播搜索）", input("onvif-host", { placeholder: "192.168.1.64", maxlength: "64" })),
    field("发现端口", input("onvif-port", { type: "number", value: "3702", min: "1", max: "65535" })),
    button("onvif-discover", "搜索摄像机", "submit"),
  );
  const devices = el("table", "rtsp-table");
  devices.id = "onvif-devices";
  devices.hidden = true;
  const head = el("tr");
  for (const text of ["名称", "型号", "IP 地址", "设备服务地址", ""]) head.append(el("th", "", text));
  devices.append(el("thead"), el("tbody"));
  devices.tHead.append(head);
  const login = el("form", "rtsp-form");
  login.id = "onvif-login";
  login.append(
    field("设备服务地址", input("onvif-xaddr", { placeholder: "http://192.168.1.64/onvif/device_service", required: "" })),
    field("ONVIF 用户名", input("onvif-user", { autocomplete: "off", value: "admin" })),
    field("ONVIF 密码", input("onvif-password", { type: "password", autocomplete: "new-password" })),
    button("onvif-read", "读取配置", "submit"),
  );
  const profiles = el("table", "rtsp-table");
  profiles.id = "onvif-profiles";
  profiles.hidden = true;
  const phead = el("tr");
  for (const text of ["配置", "编码", "分辨率", "帧率", "RTSP 地址", ""]) phead.append(el("th", "", text));
  profiles.append(el("thead"), el("tbody"));
  profiles.tHead.append(phead);
  const note = el("p", "hint");
  note.id = "onvif-status";
  section.replaceChildren(el("h3", "", "ONVIF 发现"), search, devices, login, note, profiles);
}

function deviceRow(device) {
  const tr = el("tr");
  tr.dataset.xaddr = device.xaddrs[0];
  const pick = button("", "选择");
  pick.className = "onvif-pick";
  pick.addEventListener("click", () => {
    $("onvif-xaddr").value = device.xaddrs[0];
    $("onvif-password").focus();
    status(`已选择 ${device.name || device.address}，请输入摄像机的 ONVIF 用户名和密码，然后点“读取配置”。`);
  });
  const cell = el("td");
  cell.append(pick);
  tr.append(el("td", "", device.name), el("td", "", device.hardware), el("td", "", device.address),
    el("td", "", device.xaddrs[0]), cell);
  return tr;
}

let lastCamera = null;

function useProfile(profile) {
  $("rtsp-url").value = profile.rtsp_uri;
  $("rtsp-user").value = $("onvif-user").value.trim();
  $("rtsp-password").value = $("onvif-password").value;
  if (!$("rtsp-name").value && lastCamera) {
    $("rtsp-name").value = `${lastCamera.model || lastCamera.manufacturer || "摄像机"} ${profile.name}`.trim().slice(0, 100);
  }
  $("rtsp-kindergarten").focus();
  status(`已填入“${profile.name}”的 RTSP 地址，请选择幼儿园、名称和区域后点“添加摄像机”。`);
}

function profileRow(profile) {
  const tr = el("tr");
  tr.dataset.token = profile.token;
  const uri = el("td", "", profile.rtsp_uri);
  if (profile.rewritten) {
    uri.append(el("div", "hint", `摄像机声明的地址为 ${profile.claimed_uri}，已改用设备地址`));
  }
  const use = button("", "使用此配置");
  use.className = "onvif-use";
  use.addEventListener("click", () => useProfile(profile));
  const cell = el("td");
  cell.append(use);
  const size = profile.width && profile.height ? `${profile.width}×${profile.height}` : "";
  tr.append(el("td", "", `${profile.name} (${profile.token})`), el("td", "", profile.encoding), el("td", "", size),
    el("td", "", profile.frame_rate ? `${profile.frame_rate} fps` : ""), uri, cell);
  return tr;
}

async function discover(event) {
  event.preventDefault();
  const host = $("onvif-host").value.trim();
  const port = Number($("onvif-port").value) || 3702;
  status(host ? `正在探测 ${host} …` : "正在本地网络搜索 ONVIF 摄像机 …");
  $("onvif-discover").disabled = true;
  try {
    const body = { port };
    if (host) body.host = host;
    const answer = await postJson("/api/onvif/discover", body);
    const table = $("onvif-devices");
    table.tBodies[0].replaceChildren(...answer.devices.map(deviceRow));
    table.hidden = answer.devices.length === 0;
    status(answer.devices.length ? `找到 ${answer.devices.length} 台 ONVIF 摄像机` : "未发现 ONVIF 摄像机（可直接填写设备服务地址）");
  } catch (err) {
    status(`搜索失败：${err.message || err}`, true);
  } finally {
    $("onvif-discover").disabled = false;
  }
}

async function readProfiles(event) {
  event.preventDefault();
  status("正在读取摄像机配置 …");
  $("onvif-read").disabled = true;
  try {
    const camera = await postJson("/api/onvif/profiles", {
      xaddr: $("onvif-xaddr").value.trim(),
      username: $("onvif-user").value.trim(),
      password: $("onvif-password").value,
    });
    lastCamera = camera;
    const table = $("onvif-profiles");
    table.tBodies[0].replaceChildren(...camera.profiles.map(profileRow));
    table.hidden = camera.profiles.length === 0;
    const who = [camera.manufacturer, camera.model].filter(Boolean).join(" ");
    status(camera.profiles.length ? `${who}：${camera.profiles.length} 个视频配置` : `${who}：没有可用的视频配置`);
  } catch (err) {
    status(`读取失败：${err.message || err}`, true);
  } finally {
    $("onvif-read").disabled = false;
  }
}

function start() {
  const section = $("discovery");
  if (!section) return;
  build(section);
  $("onvif-search").addEventListener("submit", discover);
  $("onvif-login").addEventListener("submit", readProfiles);
}

start();
