// What the GB/T 28181 codes mean to the console: the type digits of a 20-digit channel ID
// (which channels are cameras that can play) and the zh-CN names of channel kinds and areas.

export const AREAS = {
  entrance: "出入口", perimeter: "周界", classroom: "教室", dormitory: "寝室",
  playground: "操场", kitchen: "厨房", corridor: "走廊", other: "其他",
};
export const CHANNEL_KINDS = { "131": "摄像机", "132": "网络摄像机", "134": "报警输入", "135": "报警输出", "136": "语音输入" };
const PLAYABLE_TYPES = new Set(["131", "132"]);

export function typeCode(id) { return id && id.length === 20 ? id.slice(10, 13) : ""; }
export function isCamera(id) { return PLAYABLE_TYPES.has(typeCode(id)); }
