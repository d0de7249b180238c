// The header: who this service is (its 20-digit ID and its role from /healthz) and a
// one-line device/channel summary.

import { getJson } from "./api.js";
import { typeCode } from "./codes.js";
import { $ } from "./dom.js";
import { tree } from "./tree-model.js";

const service = { id: "", role: "" };

// The role as told by /healthz when it says so, otherwise read from the 20-digit ID:
// type 200 (SIP server) is a platform, 209 an access gateway.
function roleOf(health) {
  if (health.role || health.level) {
    const names = { district: "区级平台", municipal: "市级平台", police: "公安平台", gateway: "接入网关" };
    return names[health.role || health.level] || String(health.role || health.level);
  }
  const id = health.gateway_id || "";
  const type = typeCode(id);
  if (type === "209") return "接入网关";
  if (type === "200") {
    if (id.endsWith("0110")) return "公安平台";
    const civil = id.slice(0, 6);
    if (civil.endsWith("00")) return "市级平台";
    const d = tree.districts.get(civil);
    return `区级平台${d && d.name ? ` · ${d.name}` : ` · ${civil}`}`;
  }
  return type ? `类型 ${type}` : "";
}

export async function loadHealth() {
  try {
    const health = await getJson("/healthz");
    service.id = health.gateway_id || "";
    service.role = roleOf(health);
    $("service").textContent = `kgw · ${service.id}`;
    $("role").textContent = service.role;
    document.title = `幼儿园视频监控 · ${service.role || "监控台"}`;
    $("status").textContent =
      `设备在线 ${health.devices_online ?? "?"}/${health.devices_known ?? "?"} · 通道在线 ${health.channels_online ?? "?"}`;
  } catch (err) {
    $("status").textContent = "服务状态未知";
  }
}
