// The centre panel: a live-view grid of 1/4/9/16 cells (player.js plays each), which cell is
// selected, where the next camera goes, the layout buttons and the grid's message line.

import { $ } from "./dom.js";
import { cellLabel, closeCell, makeCell, playInCell, stopCell } from "./player.js";
import { setupPtz, showPtzFor } from "./ptz.js";
import { channelName, tree } from "./tree-model.js";

const LAYOUTS = [1, 4, 9, 16];

export const cells = [];   // all 16 cells; the first `layout` are shown
export let layout = 4;
export let selected = 0;

let errorTimer = null;

// The grid's message line; a hint (hideAfterMs) clears itself.
export function showError(text, hideAfterMs) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
  clearTimeout(errorTimer);
  if (text && hideAfterMs) errorTimer = setTimeout(() => showError(""), hideAfterMs);
}

export function selectCell(index) {
  selected = index;
  for (const c of cells) c.el.classList.toggle("selected", c.index === index);
  showPtzFor(cells[index]);  // the PTZ pad follows the selected cell (PTZ cameras only)
}

// Cells opened by ID alone (/live/{id}) take the channel's name once the tree knows it.
export function nameCells() {
  for (const cell of cells) {
    if (cell.channelId && !cell.named && tree.channels.has(cell.channelId)) {
      cell.named = true;
      cell.name = channelName(cell.channelId);
      cell.title.textContent = cellLabel(cell.name);
    }
  }
}

function closeAll() {
  for (const cell of cells) if (cell.channelId) closeCell(cell);
  selectCell(0);
}

export function setLayout(n) {
  if (!LAYOUTS.includes(n)) n = 4;
  layout = n;
  for (const cell of cells) {
    const shown = cell.index < n;
    if (!shown && cell.channelId) closeCell(cell);  // fewer cells: their connections end
    cell.el.hidden = !shown;
    // Sub-stream in grids of 4 or more, main in a single cell (issue 11): switch what plays.
    if (shown && cell.channelId && cell.stream !== cellStream()) playInCell(cell, cell.channelId, cell.name, { stream: cellStream() });
  }
  const grid = $("grid");
  grid.className = `layout-${n}`;
  grid.style.setProperty("--cols", String(Math.sqrt(n)));
  for (const b of $("layouts").querySelectorAll("button")) b.setAttribute("aria-pressed", String(Number(b.dataset.layout) === n));
  if (selected >= n) selectCell(nextFree(0) ?? 0);
  localStorage.setItem("kgw-layout", String(n));
}

// The stream a cell of the current layout asks for: a single cell main, a grid the sub-stream.
export function cellStream() { return layout >= 4 ? "sub" : "main"; }

// The first empty shown cell from `start` on (wrapping), or null.
function nextFree(start) {
  for (let k = 0; k < layout; k++) {
    const i = (start + k) % layout;
    if (!cells[i].channelId) return i;
  }
  return null;
}

// Play in the selected cell (the user picks one by clicking it); afterwards the selection
// moves on to the next free cell, so clicking cameras one after another fills the grid.
export function playInGrid(channelId, name, index) {
  const already = cells.slice(0, layout).find((c) => c.channelId === channelId && c.el.dataset.state !== "failed");
  if (already && index === undefined) {
    selectCell(already.index);
    return already;
  }
  let target = index ?? selected;
  if (target >= layout) target = nextFree(0) ?? 0;
  const cell = cells[target];
  playInCell(cell, channelId, name, { stream: cellStream() });
  selectCell(nextFree(target) ?? target);
  return cell;
}

export function setupGrid() {
  setupPtz();
  const grid = $("grid");
  for (let i = 0; i < 16; i++) {
    const cell = makeCell(i, selectCell);
    cells.push(cell);
    grid.append(cell.el);
  }
  for (const b of $("layouts").querySelectorAll("button")) b.addEventListener("click", () => setLayout(Number(b.dataset.layout)));
  $("close-all").addEventListener("click", closeAll);
  window.addEventListener("pagehide", () => { for (const c of cells) stopCell(c); });
}
