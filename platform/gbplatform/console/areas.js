// 确认区域: an operator confirms where a camera looks after seeing its snapshot. Only a camera
// confirmed as 大门口 or 周界 is ever shared with the police; the area suggested from the name the
// device gave it is only a hint (a device may name its nap-room camera "大门口").
// PUT /api/channels/{id}/area {"area": ... | null}; the channel list carries area_suggested,
// confirmed_area, confirmed_by, confirmed_at and area_review.

import { AREAS } from "./codes.js";
import { el } from "./dom.js";

const CHOICES = [
  ["entrance", "大门口"], ["perimeter", "周界"], ["classroom", "教室"], ["dormitory", "午睡室"],
  ["playground", "操场"], ["kitchen", "厨房"], ["corridor", "走廊"], ["other", "其他"],
];
const LABELS = Object.fromEntries(CHOICES);
const PUBLIC = new Set(["entrance", "perimeter"]);

function label(area) { return LABELS[area] || area; }          // the dialog's words
function badge(area) { return AREAS[area] || label(area); }     // the tree's usual area labels

// The badges of a camera row: the suggestion, the confirmation (or 未确认), a review flag.
export function areaBadges(ch) {
  const badges = [];
  const suggested = ch.area_suggested || ch.area;
  if (ch.confirmed_area) {
    const confirmed = el("span", `area area-${ch.confirmed_area} confirmed`, badge(ch.confirmed_area));
    confirmed.title = `已确认：${label(ch.confirmed_area)}（${ch.confirmed_by || "?"}${ch.confirmed_at ? "，" + new Date(ch.confirmed_at * 1000).toLocaleString("zh-CN") : ""}）` +
      (PUBLIC.has(ch.confirmed_area) ? "\n公安可见" : "\n公安不可见");
    badges.push(confirmed);
  } else {
    const hint = el("span", "area unconfirmed", suggested ? `建议 ${badge(suggested)}` : "未确认");
    hint.title = "区域未经确认（名称推断仅供参考），公安不可见";
    badges.push(hint);
  }
  if (ch.area_review) {
    const review = el("span", "area review", "待复核");
    review.title = "确认后设备修改了名称，请重新确认";
    badges.push(review);
  }
  return badges;
}

// The 确认区域 button of a camera row; onChanged() redraws after a confirmation.
export function areaButton(ch, onChanged) {
  const button = el("button", "area-confirm", "确认区域");
  button.type = "button";
  button.title = "查看截图并确认该摄像机所在区域";
  button.addEventListener("click", (ev) => {
    ev.stopPropagation();  // not a click on the row (which would play the camera)
    openDialog(ch, onChanged);
  });
  return button;
}

function openDialog(ch, onChanged) {
  const dialog = el("dialog", "area-dialog");
  dialog.setAttribute("aria-label", "确认区域");
  const title = el("h3", "", `确认区域：${ch.name || ch.id}`);
  const img = el("img", "area-snapshot");
  img.alt = "摄像机截图";
  img.src = `/api/channels/${encodeURIComponent(ch.id)}/snapshot.jpg?t=${Date.now()}`;
  const note = el("p", "summary", "截图加载中…");
  img.addEventListener("load", () => { note.textContent = `建议区域（由名称推断）：${label(ch.area_suggested || ch.area)}`; });
  img.addEventListener("error", () => { note.textContent = "无法获取截图（摄像机离线？）"; });
  const select = el("select", "area-choice");
  select.setAttribute("aria-label", "区域");
  for (const [value, text] of CHOICES) {
    const option = el("option", "", text);
    option.value = value;
    select.append(option);
  }
  select.value = ch.confirmed_area || ch.area_suggested || ch.area || "other";
  const error = el("p", "error", "");
  error.hidden = true;
  const confirm = el("button", "", "确认");
  const clear = el("button", "", "撤销确认");
  const cancel = el("button", "", "取消");
  for (const b of [confirm, clear, cancel]) b.type = "button";
  clear.hidden = !ch.confirmed_area;
  const actions = el("div", "actions");
  actions.append(confirm, clear, cancel);
  dialog.append(title, img, note, select, el("p", "hint", "只有确认为“大门口”或“周界”的摄像机才会共享给公安。"), error, actions);

  const close = () => { dialog.close(); dialog.remove(); };
  async function send(area) {
    confirm.disabled = clear.disabled = true;
    try {
      const resp = await fetch(`/api/channels/${encodeURIComponent(ch.id)}/area`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ area }),
      });
      const body = await resp.json().catch(() => ({}));
      if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
      for (const key of ["area", "area_suggested", "confirmed_area", "confirmed_by", "confirmed_at", "area_review"]) {
        if (key in body) ch[key] = body[key];
      }
      close();
      onChanged();
    } catch (exc) {
      error.textContent = `确认失败：${exc.message}`;
      error.hidden = false;
      confirm.disabled = clear.disabled = false;
    }
  }
  confirm.addEventListener("click", () => send(select.value));
  clear.addEventListener("click", () => send(null));
  cancel.addEventListener("click", close);
  dialog.addEventListener("cancel", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}
