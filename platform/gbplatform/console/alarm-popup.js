// The alarm popup (报警弹窗): every new or escalated alarm from the WebSocket pops up over the
// console until someone acknowledges it or the user closes it. Whoever must hold still while an
// alarm is on screen (patrol.js) listens for `kgw-alarm-popup` on document: detail.open is true
// when the popup appears and false when its last alarm has gone.

import { $, el } from "./dom.js";

const shown = new Map();  // alarm id -> its <li> in the popup

function box() {
  let popup = $("alarm-popup");
  if (!popup) {
    popup = el("section", "alarm-popup");
    popup.id = "alarm-popup";
    popup.setAttribute("role", "alertdialog");
    popup.setAttribute("aria-label", "新报警");
    const head = el("div", "popup-head");
    head.append(el("h2", "", "新报警"));
    const closeAll = el("button", "popup-close-all", "全部关闭");
    closeAll.type = "button";
    closeAll.addEventListener("click", () => { for (const id of [...shown.keys()]) closeAlarmPopup(id); });
    head.append(closeAll);
    popup.append(head, el("ul", "popup-list"));
    popup.hidden = true;
    document.body.append(popup);
  }
  return popup;
}

function announce(open, alarm) {
  document.dispatchEvent(new CustomEvent("kgw-alarm-popup", { detail: { open, alarm: alarm || null, count: shown.size } }));
}

export function alarmPopupOpen() { return shown.size > 0; }

// Pop `alarm` up (or refresh it): `actions` are the buttons of its list entry (查看现场, 回放…, 确认).
export function openAlarmPopup(alarm, title, meta, actions) {
  if (alarm.drill) return;  // a drill (演练) never pops up: nobody is to be dispatched
  const popup = box();
  const wasOpen = shown.size > 0;
  let li = shown.get(alarm.id);
  if (!li) {
    li = el("li", "popup-alarm");
    li.dataset.id = alarm.id;
    popup.querySelector(".popup-list").prepend(li);
    shown.set(alarm.id, li);
  }
  const close = el("button", "popup-close", "关闭");
  close.type = "button";
  close.title = "关闭弹窗（报警仍在右侧列表中）";
  close.addEventListener("click", () => closeAlarmPopup(alarm.id));
  const row = el("div", "actions");
  row.append(...actions, close);
  li.replaceChildren(el("div", "title", title), el("div", "meta", meta), row);
  popup.hidden = false;
  if (!wasOpen) announce(true, alarm);
}

// Take an alarm out of the popup (closed, acknowledged or resolved); the popup goes with the last.
export function closeAlarmPopup(id) {
  const li = shown.get(id);
  if (!li) return;
  li.remove();
  shown.delete(id);
  if (!shown.size) {
    box().hidden = true;
    announce(false, null);
  }
}
