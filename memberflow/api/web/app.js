// memberflow ops page: plain DOM, no build step, nothing loaded from outside. The dashboards' charts are drawn
// by Apache ECharts, which the app serves itself (/static/vendor/echarts/, loaded before this file).
"use strict";

const T = {
  zh: {
    "nav.segments": "人群", "nav.models": "模型", "nav.deliveries": "触达记录", "nav.audit": "审计",
    "lookup.placeholder": "手机号 / unionid / 会员卡号 / 会员ID", "lookup.go": "查找", "signout": "退出",
    "signin.title": "登录", "signin.help": "输入管理员发给你的 API 令牌。", "signin.token": "API 令牌",
    "signin.go": "登录", "signin.bad": "令牌无效或已过期。",
    "segments.title": "今日人群", "segments.day": "日期", "col.segment": "人群", "col.channel": "渠道",
    "col.size": "人数", "col.send": "待发送", "col.sent": "已发送", "col.holdout": "对照组", "col.suppressed": "已屏蔽",
    "col.trend": "30天趋势", "col.status": "状态", "col.reason": "原因", "col.phone": "手机(脱敏)",
    "col.lifecycle": "生命周期", "col.value": "价值", "col.scores": "评分", "segment.scores": "成员评分范围", "scores.legend": "十分位:D10 = 当日评分最高的 10%,D1 = 最低的 10%。",
    "scores.range": "{model}:{lo}–{hi}(中位 {mid},D{dlo}–D{dhi});全体平均 {pop}", "col.reasons": "依据", "col.member": "会员",
    "col.tags": "标签", "col.delivery": "触达", "col.model": "模型", "col.version": "版本", "col.date": "日期",
    "col.from": "起", "col.to": "止", "col.group": "类别", "col.value2": "值", "col.attempts": "尝试",
    "col.who": "操作人", "col.action": "操作", "col.rows": "行数", "col.unmasked": "明文", "col.state": "状态",
    "col.run": "批次", "col.failed": "失败",
    "segment.back": "← 全部人群", "segment.rules": "规则", "segment.suppressed": "屏蔽原因",
    "segment.members": "成员", "segment.all": "全部状态", "segment.download": "下载 CSV",
    "segment.unmasked": "明文导出(记录审计)", "segment.prev": "上一页", "segment.next": "下一页",
    "segment.page": "第 {p} / {n} 页,共 {t} 人", "segment.none": "这一天没有成员。", "segment.health": "涉及健康数据", "yes": "是", "no": "否",
    "empty.paused": "没有成员:模型 {model} 被线上监控暂停,重新训练后恢复。", "empty.no_scores": "没有成员:模型 {model} 当天没有评分(还没有线上模型,或尚未评分)。",
    "empty.not_planned": "没有成员:这一天还没有运行触达计划。", "empty.taken": "没有成员:规则匹配的 {n} 人都已进入优先级更高的人群。",
    "empty.no_match": "没有成员:这一天没有会员符合规则。",
    "member.title": "会员档案", "member.ids": "身份标识(脱敏)", "member.tags": "当前标签",
    "member.health_withheld": "已隐藏 {n} 个健康相关标签(您的角色无健康数据权限,或会员未授权)",
    "queue.profile": "查看会员档案", "queues.store": "门店 {store} 的服务队列",
    "member.timeline": "标签时间线", "member.scores": "评分历史", "member.segments": "人群记录",
    "member.deliveries": "触达记录", "member.facts": "概况", "member.notfound": "没有找到这个会员。",
    "models.title": "模型", "models.champion": "线上模型", "models.challenger": "挑战模型", "models.none": "尚未训练",
    "models.detail": "对比明细", "deliveries.dry_run": "(演练,未发送)",
    "deliveries.title": "触达记录", "audit.title": "审计日志", "busy": "数据正在更新,请稍后再试。",
    "download.done": "已下载 {n} 行", "status.send": "待发送", "status.already_sent": "已发送",
    "status.holdout": "对照组", "status.suppressed": "已屏蔽", "empty": "暂无数据",
    "nav.outcomes": "效果", "outcomes.title": "触达效果(与对照组比较)", "outcomes.day": "结果截至",
    "outcomes.help": "每周每个人群:发送组与对照组在结果窗口内的响应率之差(百分点),竖线为 95% 置信区间;区间跨过 0 表示尚不能确定有效果。",
    "outcomes.none": "还没有结果窗口已结束的触达。", "outcomes.axis": "提升(百分点)", "col.week": "周",
    "col.treated": "发送组", "col.rate_t": "发送组响应率", "col.rate_h": "对照组响应率", "col.uplift": "提升(95% 区间)",
    "col.orders1k": "每千次发送增量订单", "col.revenue1k": "每千次发送增量收入(元)", "col.note": "说明",
    "outcome.order": "下单", "outcome.checkin": "打卡", "outcomes.window": "{outcome},{days} 天内",
    "monitor.none": "尚未监控", "monitor.title": "线上监控 {day}(v{v})", "monitor.auc": "{day} 实际 AUC {v}(训练评估 {ref})",
    "monitor.no_labels": "还没有标签已成熟的评分日", "monitor.drift": "漂移(PSI):",
    "level.ok": "正常", "level.warning": "警告", "level.critical": "严重:相关人群已暂停",
    "verdict.positive": "有提升(区间高于 0)", "verdict.negative": "有负面影响(区间低于 0)",
    "verdict.unclear": "尚不能确定(区间跨过 0)", "verdict.too_few": "人数太少,无法比较(每组至少 20 人)",
    "power.detect": "当前人数可识别 {d} 个百分点以上的提升", "power.needed": "对照组需 {n} 人才能识别 {u} 个百分点",
    "power.never": "发送组人数太少,无法识别 {u} 个百分点", "loading": "加载中…",
    "nav.queue": "我的队列", "nav.queues": "服务队列", "queue.title": "今日服务队列", "queue.of": "{staff} 的服务队列",
    "queue.counts": "共 {total} 人:待处理 {open},已完成 {done},已跳过 {skipped}", "queue.empty": "今天没有需要您一对一服务的会员。",
    "queue.expected": "预期价值 ¥{v}", "queue.basis": "依据:{b}", "queue.script": "建议话术", "queue.why": "推荐理由",
    "queue.due": "待补货", "queue.due_in": "{product} {days} 天后用完", "queue.overdue": "{product} 已用完 {days} 天",
    "queue.withheld": "涉及健康信息,未显示", "queue.touches": "最近触达", "queue.no_touches": "近期没有触达",
    "queue.wecom": "企微任务", "queue.done": "完成", "queue.skip": "跳过", "queue.skip_reason": "跳过原因",
    "queue.note": "备注(可选)", "queue.open_member": "查看会员", "queue.marked": "已记录", "queue.programme": "打卡群成员",
    "state.open": "待处理", "state.done": "已完成", "state.skipped": "已跳过",
    "skip.not_reachable": "联系不上", "skip.member_declined": "会员拒绝", "skip.not_appropriate_now": "现在不合适",
    "skip.served_elsewhere": "已在其他渠道服务", "skip.other": "其他(请写备注)",
    "skip.not_a_contact": "客户已不是好友(企微)", "skip.wecom_daily_limit": "客户当天已收到其他群发(企微)",
    "queue.by_wecom": "企微回传", "queue.channel_queue": "服务队列",
    "queues.title": "服务队列完成情况", "col.staff": "员工", "col.queued": "入队", "col.done": "已完成", "col.skipped": "已跳过",
    "col.open": "待处理", "col.completion": "完成率", "queues.by_segment": "按人群",
    "nav.reports": "经营看板", "reports.title": "经营看板", "reports.through": "数据截至 {day}",
    "reports.none": "报表尚未生成:先运行一次完整流程。", "reports.more": "查看全部 {n} 行", "reports.less": "收起",
    "kpi.checkin_rate": "营内日打卡率", "kpi.completion_21d": "21天完成率", "kpi.completion_28d": "28天完成率",
    "kpi.enrolled": "入营人数", "kpi.conversion_7d": "7天首单转化率", "kpi.conversion_15d": "15天首单转化率",
    "kpi.prospects_15d": "满15天潜客", "kpi.viewers": "场均观看人数", "kpi.watch": "人均观看(分钟)",
    "kpi.buyer_rate_7d": "7天下单率(窗口已满场次)", "kpi.repurchase": "复购率(窗口已满)", "kpi.spend": "总投入",
    "kpi.cac": "整体 CAC", "kpi.ltv_cac": "整体 LTV:CAC",
    "chart.checkin_rate": "打卡率", "chart.in_camp": "营内人数", "chart.viewers": "观看人数", "chart.buyers_7d": "7天内下单人数",
    "chart.conversion_7d": "7天转化率", "chart.conversion_15d": "15天转化率", "chart.conversion": "首单转化率",
    "chart.cny_log": "元(对数坐标)", "chart.probability": "概率", "chart.repurchase_rate": "复购率",
    "chart.members": "会员数", "chart.cac": "CAC(元)", "chart.ltv": "至今 LTV(元)", "chart.day": "日期", "chart.week": "周末日期",
    "migration.latest": "最近一周({day})从上周阶段到本周阶段的人数", "unit.cny": "¥{v}",
  },
  en: {
    "nav.segments": "Segments", "nav.models": "Models", "nav.deliveries": "Deliveries", "nav.audit": "Audit",
    "lookup.placeholder": "phone / unionid / card no. / member id", "lookup.go": "Find", "signout": "Sign out",
    "signin.title": "Sign in", "signin.help": "Paste the API token your admin gave you.", "signin.token": "API token",
    "signin.go": "Sign in", "signin.bad": "The token is not valid or has expired.",
    "segments.title": "Segments today", "segments.day": "Day", "col.segment": "Segment", "col.channel": "Channel",
    "col.size": "Members", "col.send": "To send", "col.sent": "Sent", "col.holdout": "Holdout",
    "col.suppressed": "Suppressed", "col.trend": "30-day trend", "col.status": "Status", "col.reason": "Reason",
    "col.phone": "Phone (masked)", "col.lifecycle": "Lifecycle", "col.value": "Value", "col.scores": "Scores", "segment.scores": "Scores of its members",
    "scores.legend": "Deciles: D10 = the top 10 % of the day's scores, D1 = the bottom 10 %.",
    "scores.range": "{model}: {lo}–{hi} (median {mid}, D{dlo}–D{dhi}); everyone scored: {pop} on average",
    "col.reasons": "Reasons", "col.member": "Member", "col.tags": "Tags", "col.delivery": "Delivery",
    "col.model": "Model", "col.version": "Version", "col.date": "Date", "col.from": "From", "col.to": "To",
    "col.group": "Group", "col.value2": "Value", "col.attempts": "Attempts", "col.who": "Who",
    "col.action": "Action", "col.rows": "Rows", "col.unmasked": "Unmasked", "col.state": "State",
    "col.run": "Run", "col.failed": "Failed",
    "segment.back": "← All segments", "segment.rules": "Rules", "segment.suppressed": "Suppressed by reason",
    "segment.members": "Members", "segment.all": "All statuses", "segment.download": "Download CSV",
    "segment.unmasked": "Unmasked (audited)", "segment.prev": "Previous", "segment.next": "Next",
    "segment.page": "Page {p} of {n}, {t} members", "segment.none": "No members on this day.", "segment.health": "health data", "yes": "yes", "no": "no",
    "empty.paused": "Nobody: the {model} model is paused by live monitoring until it is retrained.", "empty.no_scores": "Nobody: the {model} model has no scores on this day (no champion yet, or not scored yet).",
    "empty.not_planned": "Nobody: no delivery was planned on this day yet.", "empty.taken": "Nobody: the {n} members its rules matched went to segments of higher priority.",
    "empty.no_match": "Nobody: no member matched its rules on this day.",
    "member.title": "Member profile", "member.ids": "Identifiers (masked)", "member.tags": "Current tags",
    "member.health_withheld": "{n} health-related tags hidden (your role may not see health data, or the member did not consent)",
    "queue.profile": "Open the member's profile", "queues.store": "Queues of store {store}",
    "member.timeline": "Tag timeline", "member.scores": "Score history", "member.segments": "Segments",
    "member.deliveries": "Deliveries", "member.facts": "Facts", "member.notfound": "No member found.",
    "models.title": "Models", "models.champion": "Champion", "models.challenger": "Challenger",
    "models.none": "not trained yet", "deliveries.title": "Delivery runs", "audit.title": "Audit log",
    "models.detail": "comparisons", "deliveries.dry_run": " (dry run, nothing sent)",
    "busy": "The data is being updated; try again in a moment.", "download.done": "Downloaded {n} rows",
    "status.send": "to send", "status.already_sent": "already sent", "status.holdout": "holdout",
    "status.suppressed": "suppressed", "empty": "Nothing yet",
    "nav.outcomes": "Outcomes", "outcomes.title": "Outcomes against the holdout", "outcomes.day": "Outcomes landed by",
    "outcomes.help": "Per segment and week: the response rate of members sent minus that of the holdout, in percentage points; the bar is the 95 % interval. An interval across 0 means no effect can be told yet.",
    "outcomes.none": "No delivery has a complete outcome window yet.", "outcomes.axis": "Uplift (points)", "col.week": "Week",
    "col.treated": "Treated", "col.rate_t": "Treated rate", "col.rate_h": "Holdout rate", "col.uplift": "Uplift (95 % interval)",
    "col.orders1k": "Incremental orders / 1k sends", "col.revenue1k": "Incremental CNY / 1k sends", "col.note": "Note",
    "outcome.order": "order", "outcome.checkin": "check-in", "outcomes.window": "{outcome} within {days} days",
    "monitor.none": "not monitored yet", "monitor.title": "Live monitoring {day} (v{v})", "monitor.auc": "{day}: realized AUC {v} (evaluation {ref})",
    "monitor.no_labels": "no scoring day has matured labels yet", "monitor.drift": "Drift (PSI):",
    "level.ok": "ok", "level.warning": "warning", "level.critical": "critical: its segments are paused",
    "verdict.positive": "uplift (interval above 0)", "verdict.negative": "harm (interval below 0)",
    "verdict.unclear": "not clear yet (interval across 0)", "verdict.too_few": "too few to compare (at least 20 in each arm)",
    "power.detect": "these arms detect {d} points or more", "power.needed": "a holdout of {n} would detect {u} points",
    "power.never": "too few treated to detect {u} points", "loading": "Loading…",
    "nav.queue": "My queue", "nav.queues": "Queues", "queue.title": "Today's queue", "queue.of": "Queue of {staff}",
    "queue.counts": "{total} members: {open} open, {done} done, {skipped} skipped", "queue.empty": "Nobody for you to serve 1-on-1 today.",
    "queue.expected": "expected value ¥{v}", "queue.basis": "from: {b}", "queue.script": "Suggested script", "queue.why": "Why",
    "queue.due": "Due", "queue.due_in": "{product} runs out in {days} days", "queue.overdue": "{product} ran out {days} days ago",
    "queue.withheld": "health data, not shown", "queue.touches": "Last touches", "queue.no_touches": "no recent touches",
    "queue.wecom": "WeCom task", "queue.done": "Done", "queue.skip": "Skip", "queue.skip_reason": "Why skip",
    "queue.note": "Note (optional)", "queue.open_member": "Open member", "queue.marked": "Recorded", "queue.programme": "in a check-in group",
    "state.open": "open", "state.done": "done", "state.skipped": "skipped",
    "skip.not_reachable": "not reachable", "skip.member_declined": "member declined", "skip.not_appropriate_now": "not the right time",
    "skip.served_elsewhere": "served on another channel", "skip.other": "other (write a note)",
    "skip.not_a_contact": "no longer a contact (WeCom)", "skip.wecom_daily_limit": "already got a mass message that day (WeCom)",
    "queue.by_wecom": "from WeCom", "queue.channel_queue": "queue",
    "queues.title": "Queue completion", "col.staff": "Staff", "col.queued": "Queued", "col.done": "Done", "col.skipped": "Skipped",
    "col.open": "Open", "col.completion": "Completion", "queues.by_segment": "By segment",
    "nav.reports": "Dashboards", "reports.title": "Dashboards", "reports.through": "Data through {day}",
    "reports.none": "The reports are not built yet: run the pipeline once.", "reports.more": "Show all {n} rows", "reports.less": "Show fewer",
    "kpi.checkin_rate": "Daily check-in rate in camp", "kpi.completion_21d": "21-day completion", "kpi.completion_28d": "28-day completion",
    "kpi.enrolled": "Enrolled", "kpi.conversion_7d": "7-day first-order conversion", "kpi.conversion_15d": "15-day first-order conversion",
    "kpi.prospects_15d": "Prospects past 15 days", "kpi.viewers": "Viewers per session", "kpi.watch": "Minutes per viewer",
    "kpi.buyer_rate_7d": "7-day buyer rate (closed windows)", "kpi.repurchase": "Repurchase rate (closed windows)", "kpi.spend": "Total spend",
    "kpi.cac": "Overall CAC", "kpi.ltv_cac": "Overall LTV:CAC",
    "chart.checkin_rate": "Check-in rate", "chart.in_camp": "In camp", "chart.viewers": "Viewers", "chart.buyers_7d": "Buyers within 7 days",
    "chart.conversion_7d": "7-day conversion", "chart.conversion_15d": "15-day conversion", "chart.conversion": "First-order conversion",
    "chart.cny_log": "¥ (log scale)", "chart.probability": "probability", "chart.repurchase_rate": "Repurchase rate",
    "chart.members": "Members", "chart.cac": "CAC (¥)", "chart.ltv": "LTV to date (¥)", "chart.day": "Day", "chart.week": "Week ending",
    "migration.latest": "Last week ({day}): members from their stage a week before to their stage now", "unit.cny": "¥{v}",
  },
};

const state = {
  lang: localStorage.getItem("mf.lang") || (navigator.language.startsWith("zh") ? "zh" : "en"),
  token: sessionStorage.getItem("mf.token"),
  me: null,
  day: null,
};

const $ = (sel) => document.querySelector(sel);
const t = (key, vars = {}) => (T[state.lang][key] || key).replace(/\{(\w+)\}/g, (_, k) => vars[k]);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((n) => { n.placeholder = t(n.dataset.i18nPlaceholder); });
  $("#lang").textContent = state.lang === "zh" ? "English" : "中文";
}

function toast(text) {
  const box = $("#toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) };
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) { signOut(); throw new ApiError(401, t("signin.bad")); }
  if (res.status === 503) throw new ApiError(503, t("busy"));
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new ApiError(res.status, detail);
  }
  return options.raw ? res : res.json();
}

const pct = (p) => (p === null || p === undefined ? "–" : `${(p * 100).toFixed(1)}%`);
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString(state.lang === "zh" ? "zh-CN" : "en"));

// --- small inline SVG: the segment list's sparklines and the outcomes chart (the rest: ECharts, below) ----------
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "title") { const tt = svg("title"); tt.textContent = v; node.append(tt); } else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function sparkline(points, key = "size", width = 140, height = 32) {
  const values = points.map((p) => p[key] || 0);
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const coords = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", title: points.map((p) => `${p.as_of}: ${p[key]}`).join("\n") },
    svg("polyline", { points: coords.join(" ") }));
}

// uplift per week with its 95 % interval: y axis in percentage points with ticks and a zero line; one band per
// week on the x axis, the point in its middle
function upliftChart(rows, width = 640, height = 180) {
  const left = 48, bottom = 22, top = 24, right = 8, plotW = width - left - right, plotH = height - top - bottom;
  const values = rows.flatMap((r) => [r.ci_low, r.ci_high, 0]).filter((v) => v !== null);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo < 0.02) { hi += 0.01; lo -= 0.01; }
  const step = niceStep((hi - lo) / 4);
  // the axis runs from tick to tick: at least two labelled ticks, whatever the intervals' span
  lo = Math.floor(lo / step - 1e-9) * step;
  hi = Math.ceil(hi / step + 1e-9) * step;
  const y = (v) => top + (hi - v) / (hi - lo) * plotH;
  const band = plotW / Math.max(rows.length, 1);
  const x = (i) => left + band * (i + 0.5);
  const ticks = [];
  for (let k = Math.round(lo / step); k <= Math.round(hi / step); k += 1) ticks.push(k === 0 ? 0 : k * step);
  const digits = step * 100 < 1 ? 1 : 0;
  const axis = [svg("line", { x1: left, x2: left, y1: top, y2: top + plotH, class: "axis" }),
    ...ticks.flatMap((v) => [svg("line", { x1: left - 4, x2: left + plotW, y1: y(v), y2: y(v), class: v === 0 ? "zero" : "grid" }),
      Object.assign(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }), { textContent: (v * 100).toFixed(digits) })]),
    Object.assign(svg("text", { x: 0, y: 12, class: "axis-title" }), { textContent: t("outcomes.axis") })];
  const marks = rows.flatMap((r, i) => [
    Object.assign(svg("text", { x: x(i), y: height - 6, "text-anchor": "middle" }), { textContent: r.week }),
    ...(r.uplift === null ? [] : [
      svg("line", { x1: x(i), x2: x(i), y1: y(r.ci_low), y2: y(r.ci_high), class: "ci" }),
      svg("line", { x1: x(i) - 6, x2: x(i) + 6, y1: y(r.ci_low), y2: y(r.ci_low), class: "ci" }),
      svg("line", { x1: x(i) - 6, x2: x(i) + 6, y1: y(r.ci_high), y2: y(r.ci_high), class: "ci" }),
      svg("circle", { cx: x(i), cy: y(r.uplift), r: 4, class: r.verdict === "positive" ? "pos" : r.verdict === "negative" ? "neg" : "flat",
        title: `${r.week}: ${(r.uplift * 100).toFixed(1)} (${(r.ci_low * 100).toFixed(1)} … ${(r.ci_high * 100).toFixed(1)})` })])]);
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "uplift", "data-testid": "uplift-chart" }, ...axis, ...marks);
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-6)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || 10 * p;
}

function table(headers, rows, attrs = {}) {
  if (!rows.length) return el("p", { class: "muted" }, t("empty"));
  return el("div", { class: "scroll" }, el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows)));
}

// a code as ops read it in the page's language (GET /api/labels: channels, stages, reasons, statuses...)
const lbl = (group, code) => {
  if (code === null || code === undefined || code === "") return "–";
  const found = ((state.labels || {})[group] || {})[code];
  return found ? found[state.lang] : String(code);
};

// a segment's name and description in the page's language (segments.yml's labels; the key without one)
const segLabel = (s) => (s.labels && s.labels[state.lang]) || s.name;
const segText = (s) => (s.descriptions && s.descriptions[state.lang]) || s.description;

// why a segment has nobody on the day (the API's empty_reason), in the page's language
const whyEmpty = (s) => (s.empty_reason ? el("div", { class: "warn small", "data-testid": `empty-${s.name}` },
  t(`empty.${s.empty_reason.code}`, { model: s.empty_reason.model ? lbl("model", s.empty_reason.model) : "", n: num(s.empty_reason.matched) })) : null);

const statusChip = (s) => el("span", { class: `chip s-${s}` }, t(`status.${s}`));

// --- views ------------------------------------------------------------------------------------------------
async function showSegments(nav) {
  const query = state.day ? `?as_of=${encodeURIComponent(state.day)}` : "";
  const data = await nav.api(`/api/segments${query}`);
  state.day = data.as_of;
  const picker = el("select", { id: "day", "data-testid": "day", onchange: (e) => { state.day = e.target.value; route(); } },
    data.dates.map((d) => el("option", { value: d, selected: d === data.as_of }, d)));
  const rows = data.segments.map((s) => el("tr", { "data-segment": s.name },
    el("td", {}, el("a", { href: `#/segments/${encodeURIComponent(s.name)}`, "data-testid": `segment-${s.name}` }, segLabel(s)),
      el("div", { class: "muted small" }, segText(s)), whyEmpty(s)),
    el("td", {}, lbl("outreach_channel", s.channel)),
    el("td", { class: "n" }, num(s.size)),
    el("td", { class: "n" }, num(s.send)),
    el("td", { class: "n" }, num(s.delivery.sent || 0)),
    el("td", { class: "n" }, num(s.holdout)),
    el("td", { class: "n" }, num(s.suppressed_total)),
    el("td", {}, sparkline(s.trend))));
  nav.render(el("div", { class: "card" },
    el("div", { class: "row" }, el("h1", {}, t("segments.title")), el("span", { class: "spacer" }),
      el("label", {}, t("segments.day"), " ", picker)),
    table([t("col.segment"), t("col.channel"), t("col.size"), t("col.send"), t("col.sent"), t("col.holdout"),
      t("col.suppressed"), t("col.trend")], rows, { "data-testid": "segments" })));
}

async function showSegment(nav, name, params) {
  const page = Number(params.get("page") || 1);
  const status = params.get("status") || "";
  const day = state.day ? `as_of=${encodeURIComponent(state.day)}` : "";
  const seg = await nav.api(`/api/segments/${encodeURIComponent(name)}?${day}`);
  const members = await nav.api(`/api/segments/${encodeURIComponent(name)}/members?${day}&page=${page}&page_size=25&lang=${state.lang}`
    + (status ? `&status=${status}` : ""));
  state.day = members.as_of;
  const pages = Math.max(1, Math.ceil(members.total / members.page_size));
  const go = (p, s = status) => { location.hash = `#/segments/${encodeURIComponent(name)}?page=${p}${s ? `&status=${s}` : ""}`; };
  const filter = el("select", { "data-testid": "status-filter", onchange: (e) => go(1, e.target.value) },
    el("option", { value: "" }, t("segment.all")),
    ["send", "already_sent", "holdout", "suppressed"].map((s) => el("option", { value: s, selected: s === status }, t(`status.${s}`))));
  const unmasked = el("input", { type: "checkbox", id: "unmasked", "data-testid": "unmasked" });
  const download = el("button", { type: "button", "data-testid": "download", onclick: () => downloadCsv(name, status, unmasked.checked) },
    t("segment.download"));
  const trendBox = chartBox("trend");
  trendBox.dataset.testid = "trend-chart";
  const suppressed = Object.entries(seg.suppressed).sort((a, b) => b[1] - a[1]);
  const maxSup = Math.max(1, ...suppressed.map((s) => s[1]));
  const rows = members.items.map((m) => el("tr", { "data-member": m.member_id },
    el("td", {}, el("a", { href: `#/members/${encodeURIComponent(m.member_id)}`, class: "mono", "data-testid": "member-link" }, m.member_id)),
    el("td", {}, statusChip(m.status), m.reason ? el("div", { class: "muted small" }, lbl("suppression_reason", m.reason)) : null),
    el("td", { class: "mono" }, m.phone_masked || "–"),
    el("td", {}, lbl("lifecycle", m.lifecycle_stage), el("div", { class: "muted small" }, m.value_tier ? lbl("value_tier", m.value_tier) : "")),
    el("td", {}, Object.entries(m.scores).map(([k, v]) => el("div", { class: "small" }, `${lbl("model", k)} ${pct(v.probability)} · D${v.decile}`))),
    el("td", {}, el("ul", { class: "reasons" }, m.reasons.map((r) => el("li", {}, r)))),
    el("td", {}, lbl("delivery_status", m.delivery_status))));
  nav.render(el("div", {},
    el("p", {}, el("a", { href: "#/segments" }, t("segment.back"))),
    el("div", { class: "card" },
      el("div", { class: "row" }, el("h1", { "data-testid": "segment-title", "data-segment": seg.name }, segLabel(seg)),
        el("span", { class: "chip" }, lbl("outreach_channel", seg.channel)),
        seg.health_based ? el("span", { class: "chip warn" }, t("segment.health")) : null, el("span", { class: "spacer" }),
        el("span", { class: "muted" }, members.as_of)),
      el("p", { class: "muted" }, segText(seg)),
      el("div", { class: "stats" },
        [["col.size", seg.size], ["col.send", seg.send], ["col.sent", seg.delivery.sent || 0], ["col.holdout", seg.holdout],
          ["col.suppressed", seg.suppressed_total]].map(([k, v]) => el("div", { class: "stat" }, el("b", {}, num(v)), el("span", {}, t(k))))),
      trendBox,
      seg.scores.length ? el("div", { "data-testid": "score-ranges" }, el("h3", {}, t("segment.scores")),
        seg.scores.map((r) => el("div", { class: "small", "data-model": r.model }, t("scores.range", {
          model: lbl("model", r.model), lo: pct(r.min_probability), hi: pct(r.max_probability), mid: pct(r.median_probability),
          dlo: r.min_decile, dhi: r.max_decile, pop: pct(r.population_mean) }))),
        el("p", { class: "muted small" }, t("scores.legend"))) : null,
      el("div", { class: "cols" },
        el("div", {}, el("h3", {}, t("segment.rules")), el("pre", { class: "rules" }, JSON.stringify(seg.rules, null, 1))),
        el("div", {}, el("h3", {}, t("segment.suppressed")),
          suppressed.length ? suppressed.map(([r, n]) => el("div", { class: "hbar" },
            el("span", {}, lbl("suppression_reason", r)), el("i", { style: null, "data-w": Math.round((n / maxSup) * 100) }), el("b", {}, num(n))))
            : el("p", { class: "muted" }, t("empty"))))),
    el("div", { class: "card" },
      el("div", { class: "row" }, el("h2", {}, t("segment.members")), filter, el("span", { class: "spacer" }),
        state.me.role === "admin" ? el("label", { class: "small" }, unmasked, " ", t("segment.unmasked")) : null, download),
      members.total ? table([t("col.member"), t("col.status"), t("col.phone"), t("col.lifecycle"), t("col.scores"),
        t("col.reasons"), t("col.delivery")], rows, { "data-testid": "members" }) : whyEmpty(seg) || el("p", { class: "muted" }, t("segment.none")),
      el("div", { class: "row pager" },
        el("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, t("segment.prev")),
        el("span", { "data-testid": "pager" }, t("segment.page", { p: page, n: pages, t: num(members.total) })),
        el("button", { type: "button", disabled: page >= pages, onclick: () => go(page + 1) }, t("segment.next"))))));
  // widths set from script, not inline style attributes: the page's CSP allows no inline styles
  document.querySelectorAll(".hbar i").forEach((i) => { i.style.width = `${i.dataset.w}%`; });
  if (state.nav === nav) drawChart(trendBox, chartOption({
    x: seg.trend.map((p) => p.as_of), xName: t("chart.day"), y: t("chart.members"),
    series: [{ name: t("col.size"), data: seg.trend.map((p) => p.size), itemStyle: { color: "#99d5cf" } },
      { name: t("col.holdout"), data: seg.trend.map((p) => p.holdout || 0), itemStyle: { color: "#a5b4fc" } },
      { name: t("col.sent"), data: seg.trend.map((p) => p.sent), itemStyle: { color: "#0f766e" } }],
  }));
}

async function downloadCsv(name, status, unmasked) {
  const q = new URLSearchParams();
  if (state.day) q.set("as_of", state.day);
  if (status) q.set("status", status);
  if (unmasked) q.set("unmasked", "true");
  try {
    const res = await api(`/api/segments/${encodeURIComponent(name)}/export.csv?${q}`, { raw: true });
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: `${name}-${state.day}${unmasked ? "-unmasked" : ""}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    toast(t("download.done", { n: num(res.headers.get("X-Row-Count")) }));
  } catch (err) { toast(err.message); }
}

async function showMember(nav, id) {
  let p;
  try { p = await nav.api(`/api/members/${encodeURIComponent(id)}`); } catch (err) {
    if (err.status === 404) { nav.render(el("div", { class: "card" }, el("p", {}, t("member.notfound")))); return; }
    throw err;
  }
  const m = p.member;
  const yesNo = (v) => (v === null || v === undefined ? "–" : t(v ? "yes" : "no"));
  const facts = [["first_seen_on", m.first_seen_on], ["acquisition_channel", lbl("acquisition_channel", m.acquisition_channel)],
    ["staff_owner", m.staff_owner], ["channels_used", (m.channels_used || []).map((c) => lbl("acquisition_channel", c)).join("、")],
    ["phone", m.phone_masked], ["marketing_opt_out", yesNo(m.marketing_opt_out)], ["health_data_consent", yesNo(m.health_data_consent)]];
  const reasonsOf = (s) => (state.lang === "zh" && s.reasons_zh ? s.reasons_zh : s.reasons);
  const tagText = (tg) => `${lbl("tag_group", tg.tag_group)}:${lbl(tg.tag_group, tg.tag_value)}`;
  const latest = {};
  p.scores.forEach((s) => { latest[s.model] = s; });
  const scoreBox = chartBox("scores");
  const days = [...new Set(p.scores.map((s) => s.as_of))].sort();
  const modelColors = { churn: "#b91c1c", repurchase: "#0f766e", conversion: "#7c3aed" };
  nav.render(el("div", {},
    el("div", { class: "card" },
      el("div", { class: "row" }, el("h1", {}, t("member.title")), el("span", { class: "mono", "data-testid": "member-id" }, m.member_id)),
      el("div", { class: "cols" },
        el("div", {}, el("h3", {}, t("member.facts")),
          el("dl", {}, facts.map(([k, v]) => [el("dt", {}, lbl("member_fact", k)), el("dd", {}, v === null || v === undefined ? "–" : String(v))]))),
        el("div", {}, el("h3", {}, t("member.ids")),
          el("ul", { class: "ids", "data-testid": "identifiers" }, p.identifiers.map((i) => el("li", {}, el("b", {}, lbl("id_type", i.id_type)), " ", el("span", { class: "mono" }, i.value))))),
        el("div", {}, el("h3", {}, t("member.tags"), p.tags_as_of ? el("span", { class: "muted small" }, ` · ${p.tags_as_of}`) : ""),
          el("div", { class: "chips" }, p.current_tags.map((tg) => el("span", { class: `chip${tg.health_related ? " warn" : ""}` }, tagText(tg)))),
          p.health_tags_withheld ? el("p", { class: "muted small", "data-testid": "health-withheld" }, t("member.health_withheld", { n: p.health_tags_withheld })) : null))),
    el("div", { class: "card" }, el("h2", {}, t("member.scores")),
      p.scores.length ? scoreBox : el("p", { class: "muted" }, t("empty")),
      table([t("col.model"), t("col.date"), t("col.scores"), t("col.reasons")], Object.values(latest).map((s) => el("tr", {},
        el("td", {}, lbl("model", s.model)), el("td", {}, s.as_of), el("td", {}, `${pct(s.probability)} · D${s.decile}`),
        el("td", {}, el("ul", { class: "reasons" }, reasonsOf(s).map((r) => el("li", {}, r)))))))),
    el("div", { class: "card" }, el("h2", {}, t("member.timeline")),
      table([t("col.group"), t("col.value2"), t("col.from"), t("col.to")], p.tags.map((tg) => el("tr", {},
        el("td", {}, lbl("tag_group", tg.tag_group)), el("td", {}, lbl(tg.tag_group, tg.tag_value)), el("td", {}, tg.valid_from), el("td", {}, tg.valid_to || "…"))))),
    el("div", { class: "cols" },
      el("div", { class: "card" }, el("h2", {}, t("member.segments")),
        table([t("col.date"), t("col.segment"), t("col.status")], p.segments.map((s) => el("tr", {},
          el("td", {}, s.as_of), el("td", {}, lbl("segment", s.segment)), el("td", {}, statusChip(s.status), s.reason ? ` ${lbl("suppression_reason", s.reason)}` : ""))))),
      el("div", { class: "card" }, el("h2", {}, t("member.deliveries")),
        table([t("col.date"), t("col.segment"), t("col.channel"), t("col.status"), t("col.attempts")], p.deliveries.map((d) => el("tr", {},
          el("td", {}, d.as_of), el("td", {}, lbl("segment", d.segment)), el("td", {}, lbl("outreach_channel", d.channel)),
          el("td", {}, lbl("delivery_status", d.status)), el("td", { class: "n" }, d.attempts))))))));
  if (p.scores.length && state.nav === nav) drawChart(scoreBox, chartOption({
    x: days, xName: t("chart.day"), y: t("chart.probability"), percent: [true],
    series: Object.keys(modelColors).filter((k) => p.scores.some((s) => s.model === k)).map((k) => ({
      type: "line", name: lbl("model", k), itemStyle: { color: modelColors[k] }, symbolSize: 8, connectNulls: true,
      data: days.map((d) => { const found = p.scores.find((s) => s.model === k && s.as_of === d); return found ? found.probability : null; }),
    })),
  }));
}

// live monitoring of the champion: its status, why, realized metrics beside the evaluation, the largest drifts
function monitoringBlock(mon) {
  if (!mon) return el("p", { class: "muted small" }, t("monitor.none"));
  const realized = mon.checks.filter((c) => c.kind === "realized" && c.name.startsWith("auc@"));
  const drift = mon.checks.filter((c) => c.kind !== "realized").sort((a, b) => (b.value || 0) - (a.value || 0)).slice(0, 4);
  const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
  const raised = mon.checks.filter((c) => c.level !== "ok");
  return el("div", { class: "monitor", "data-testid": "monitoring" },
    el("div", { class: "row" }, el("h3", {}, t("monitor.title", { day: mon.as_of, v: mon.version })),
      el("span", { class: `chip lvl-${mon.status}` }, t(`level.${mon.status}`))),
    raised.length ? el("ul", { class: "reasons small" }, raised.map((c) => el("li", {},
      `${lbl("monitor_check", c.kind)} · ${c.name}: ${fmt(c.value)}${c.reference === null || c.reference === undefined ? "" : ` / ${fmt(c.reference)}`} (${t(`level.${c.level}`)})`))) : null,
    el("div", { class: "small muted" },
      realized.length ? realized.map((c) => el("div", {}, t("monitor.auc", { day: c.name.slice(4), v: fmt(c.value), ref: fmt(c.reference) })))
        : t("monitor.no_labels"),
      el("div", {}, t("monitor.drift"), " ", drift.map((c) => `${c.name} ${fmt(c.value)}`).join(" · "))));
}

async function showModels(nav) {
  const models = await nav.api("/api/models");
  const cards = [];
  for (const m of models) {
    const parts = [];
    for (const alias of ["champion", "challenger"]) {
      const v = m[alias];
      if (!v) { parts.push(el("p", { class: "muted" }, `${t(`models.${alias}`)}: ${t("models.none")}`)); continue; }
      if (alias === "challenger" && m.champion && m.champion.version === v.version) continue;
      const metrics = Object.entries(v.metrics).filter(([k]) => !k.endsWith("label_rate"))
        .map(([k, val]) => el("div", { class: "stat" }, el("b", {}, Number.isInteger(val) ? num(val) : Number(val).toFixed(3)), el("span", {}, lbl("metric", k.replace("model.", "")))));
      const plots = el("div", { class: "plots" });
      parts.push(el("div", {}, el("h3", {}, `${t(`models.${alias}`)} v${v.version}`),
        el("p", { class: "small", "data-testid": "decision" }, lbl("model_decision", v.decision)),
        v.reason ? el("details", { class: "muted small" }, el("summary", {}, t("models.detail")), v.reason) : null,
        el("div", { class: "stats" }, metrics), plots));
      for (const name of v.plots.filter((n) => /roc|gain|calibration/.test(n))) {
        nav.api(`/api/models/${m.model}/versions/${v.version}/plots/${name}`, { raw: true })
          .then((r) => r.blob()).then((b) => plots.append(el("img", { src: URL.createObjectURL(b), alt: name })))
          .catch(() => {});
      }
    }
    cards.push(el("div", { class: "card", "data-model": m.model }, el("h2", {}, lbl("model", m.model)), monitoringBlock(m.monitoring), parts));
  }
  nav.render(el("div", {}, el("h1", {}, t("models.title")), cards));
}

function outcomeNote(r) {
  const pts = (v) => `${v >= 0 ? "+" : ""}${(v * 100).toFixed(1)}`;
  const parts = [t(`verdict.${r.verdict}`)];
  if (r.detectable_uplift !== null) parts.push(t("power.detect", { d: (r.detectable_uplift * 100).toFixed(1) }));
  if (r.verdict === "unclear" && r.uplift) {
    parts.push(r.holdout_needed ? t("power.needed", { n: num(r.holdout_needed), u: pts(r.uplift) }) : t("power.never", { u: pts(r.uplift) }));
  }
  return parts.join(";");
}

async function showOutcomes(nav) {
  const rows = await nav.api("/api/outcomes");
  const bySegment = {};
  rows.forEach((r) => { (bySegment[r.segment] = bySegment[r.segment] || []).push(r); });
  const signed = (v, d = 1) => (v === null || v === undefined ? "–" : `${v >= 0 ? "+" : ""}${d ? v.toFixed(d) : num(Math.round(v))}`);
  const cards = Object.entries(bySegment).map(([name, weeks]) => el("div", { class: "card", "data-segment": name },
    el("div", { class: "row" }, el("h2", {}, lbl("segment", name)), el("span", { class: "chip" }, lbl("outreach_channel", weeks[0].channel)),
      el("span", { class: "muted small" }, t("outcomes.window", { outcome: t(`outcome.${weeks[0].outcome}`), days: weeks[0].outcome_days }))),
    upliftChart(weeks),
    table([t("col.week"), t("col.treated"), t("col.holdout"), t("col.rate_t"), t("col.rate_h"), t("col.uplift"),
      t("col.orders1k"), t("col.revenue1k"), t("col.note")], weeks.map((r) => el("tr", { "data-week": r.week },
      el("td", {}, r.week), el("td", { class: "n" }, num(r.treated)), el("td", { class: "n" }, num(r.holdout)),
      el("td", { class: "n" }, pct(r.treated_rate)), el("td", { class: "n" }, pct(r.holdout_rate)),
      el("td", { class: "n nowrap" }, r.uplift === null ? "–" : `${signed(r.uplift * 100)} (${signed(r.ci_low * 100)} … ${signed(r.ci_high * 100)})`),
      el("td", { class: "n" }, signed(r.incremental_orders_per_1000, 0)), el("td", { class: "n" }, signed(r.incremental_revenue_per_1000, 0)),
      el("td", { class: "small" }, outcomeNote(r)))), { "data-testid": "outcomes" })));
  nav.render(el("div", {}, el("h1", {}, t("outcomes.title")), el("p", { class: "muted" }, t("outcomes.help")),
    cards.length ? cards : el("div", { class: "card" }, el("p", { class: "muted" }, t("outcomes.none")))));
}

async function showDeliveries(nav) {
  const runs = await nav.api("/api/deliveries");
  nav.render(el("div", { class: "card" }, el("h1", {}, t("deliveries.title")),
    table([t("col.date"), t("col.run"), t("col.sent"), t("col.suppressed"), t("col.holdout"), t("col.failed")],
      runs.map((r) => el("tr", {}, el("td", {}, r.as_of), el("td", { class: "mono small" }, r.run_id, r.dry_run ? t("deliveries.dry_run") : ""),
        el("td", { class: "n" }, num(r.sent)), el("td", { class: "n" }, num(r.suppressed)), el("td", { class: "n" }, num(r.holdout)),
        el("td", { class: "n" }, num(r.failed)))))));
}

async function showAudit(nav) {
  const rows = await nav.api("/api/audit");
  nav.render(el("div", { class: "card" }, el("h1", {}, t("audit.title")),
    table([t("col.date"), t("col.who"), t("col.action"), t("col.segment"), t("col.unmasked"), t("col.rows"), t("col.state")],
      rows.map((r) => el("tr", {}, el("td", { class: "small" }, r.at), el("td", {}, `${r.token_name} (${lbl("api_role", r.role)})`),
        el("td", {}, lbl("audit_action", r.action)), el("td", {}, r.segment ? lbl("segment", r.segment) : "–"), el("td", {}, r.unmasked ? "✔" : ""),
        el("td", { class: "n" }, num(r.rows)), el("td", {}, lbl("audit_state", r.state)))))));
}

// --- staff queues ----------------------------------------------------------------------------------------
const SKIP_REASONS = ["not_reachable", "member_declined", "not_appropriate_now", "served_elsewhere", "other"];

function dueText(due) {
  if (!due) return null;
  if (!due.product) return t("queue.withheld");
  return due.in_days >= 0 ? t("queue.due_in", { product: due.product, days: due.in_days })
    : t("queue.overdue", { product: due.product, days: -due.in_days });
}

function queueItem(staff, item, onMarked) {
  const reason = el("select", { "data-testid": "skip-reason" }, SKIP_REASONS.map((r) => el("option", { value: r }, t(`skip.${r}`))));
  const note = el("input", { "data-testid": "note", maxlength: 500 });
  note.placeholder = t("queue.note");
  const mark = async (action) => {
    const body = { item_id: item.item_id, action };
    if (action === "skipped") { body.reason = reason.value; body.note = note.value || null; }
    try {
      await api(`/api/staff/${encodeURIComponent(staff)}/queue/marks`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      toast(t("queue.marked"));
      onMarked();
    } catch (err) { toast(err.message); }
  };
  const canMark = state.me.staff_id === staff;
  const due = dueText(item.due);
  const touches = item.last_touches.length
    ? el("ul", { class: "small" }, item.last_touches.map((x) => el("li", {}, x.channel === "queue"
      ? `${x.as_of} · ${lbl("segment", x.segment)} · ${t("queue.channel_queue")} · ${t(`state.${x.status}`)}`
      : `${x.as_of} · ${lbl("segment", x.segment)} · ${lbl("outreach_channel", x.channel)} · ${lbl("delivery_status", x.status)}`)))
    : el("p", { class: "muted small" }, t("queue.no_touches"));
  return el("li", { class: `qitem st-${item.state}`, "data-testid": "queue-item", "data-item": item.item_id },
    el("div", { class: "row" },
      el("b", { class: "pos" }, `#${item.position}`),
      el("span", { class: "mono" }, item.phone_masked || item.member_id),
      el("span", { class: "chip", title: item.segment_description || "" }, item.segment_label),
      item.programme ? el("span", { class: "chip" }, t("queue.programme")) : null,
      el("span", { class: "spacer" }),
      el("span", { class: "muted small", title: t("queue.basis", { b: item.propensity_basis || "–" }) },
        t("queue.expected", { v: item.expected_value === null ? "–" : item.expected_value.toFixed(0) })),
      el("span", { class: `chip q-${item.state}`, "data-testid": "item-state" }, t(`state.${item.state}`),
        item.skip_reason ? ` · ${t(`skip.${item.skip_reason}`)}` : "",
        item.marked_by === "WeCom" ? ` · ${t("queue.by_wecom")}` : "")),
    el("p", { class: "script", "data-testid": "script" }, item.script || "–"),
    el("details", { "data-testid": "item-details" },
      el("summary", {}, t("queue.open_member")),
      el("div", { class: "cols" },
        el("div", {}, el("h3", {}, t("queue.why")), el("ul", { class: "reasons" }, item.reasons.map((r) => el("li", {}, r))),
          due ? el("p", {}, el("b", {}, t("queue.due")), " ", due) : null),
        el("div", {}, el("h3", {}, t("queue.touches")), touches,
          el("p", { class: "small", "data-testid": "wecom-result" }, `${t("queue.wecom")}: `, item.wecom_result
            ? `${lbl("wecom_result", item.wecom_result)}${item.wecom_sent_at ? ` ${item.wecom_sent_at.slice(0, 16).replace("T", " ")}` : ""}`
            : lbl("delivery_status", item.wecom_status)),
          el("p", { class: "small" }, el("a", { href: `#/members/${encodeURIComponent(item.member_id)}`, "data-testid": "open-profile" }, t("queue.profile"))),
          el("p", { class: "mono small" }, item.member_id)))),
    canMark ? el("div", { class: "row" },
      el("button", { type: "button", "data-testid": "mark-done", onclick: () => mark("done") }, t("queue.done")),
      el("label", { class: "small" }, t("queue.skip_reason"), " ", reason), note,
      el("button", { type: "button", class: "link", "data-testid": "mark-skip", onclick: () => mark("skipped") }, t("queue.skip"))) : null);
}

async function showQueue(nav, staff) {
  staff = staff || state.me.staff_id;
  const query = new URLSearchParams({ lang: state.lang });
  if (state.day) query.set("as_of", state.day);
  const data = await nav.api(`/api/staff/${encodeURIComponent(staff)}/queue?${query}`);
  const reload = () => route();
  nav.render(el("div", { class: "card" },
    el("div", { class: "row" }, el("h1", { "data-testid": "queue-title" }, staff === state.me.staff_id ? t("queue.title") : t("queue.of", { staff })),
      el("span", { class: "spacer" }), el("span", { class: "muted" }, data.as_of)),
    el("p", { "data-testid": "queue-counts" }, t("queue.counts", data)),
    data.items.length ? el("ol", { class: "queue", "data-testid": "queue" }, data.items.map((i) => queueItem(staff, i, reload)))
      : el("p", { class: "muted" }, t("queue.empty"))));
}

async function showQueues(nav) {
  const query = state.day ? `?as_of=${encodeURIComponent(state.day)}` : "";
  const data = await nav.api(`/api/queues${query}`);
  const rows = (list, link) => list.map((r) => el("tr", {},
    el("td", {}, link ? [el("a", { href: `#/queue/${encodeURIComponent(r.key)}` }, r.key), r.staff_role ? el("span", { class: "muted small" }, ` ${lbl("staff_role", r.staff_role)}`) : null]
      : lbl("segment", r.key)),
    el("td", { class: "n" }, num(r.queued)), el("td", { class: "n" }, num(r.done)), el("td", { class: "n" }, num(r.skipped)),
    el("td", { class: "n" }, num(r.open)), el("td", { class: "n" }, pct(r.completion))));
  const head = (first) => [first, t("col.queued"), t("col.done"), t("col.skipped"), t("col.open"), t("col.completion")];
  nav.render(el("div", {},
    el("div", { class: "card" }, el("div", { class: "row" }, el("h1", { "data-testid": "queues-title" }, state.me.store_id ? t("queues.store", { store: state.me.store_id }) : t("queues.title")), el("span", { class: "spacer" }),
      el("span", { class: "muted" }, data.as_of || "")),
      table(head(t("col.staff")), rows(data.by_staff, true), { "data-testid": "queues" })),
    el("div", { class: "card" }, el("h2", {}, t("queues.by_segment")), table(head(t("col.segment")), rows(data.by_segment, false)))));
}

// --- dashboards: the report models (dbt), each number as the API serves it, charts drawn by ECharts -------
const charts = [];
function disposeCharts() { while (charts.length) charts.pop().dispose(); }
window.addEventListener("resize", () => charts.forEach((c) => c.resize()));

// a report value as ops read it: codes by their label, shares as percentages, money in yuan
function cell(report, column, value) {
  if (value === null || value === undefined) return "–";
  const labels = report.value_labels[column.name];
  if (labels && labels[String(value)] !== undefined) return labels[String(value)];
  switch (column.unit) {
    case "share": return pct(value);
    case "cny": return t("unit.cny", { v: Number(value).toLocaleString(state.lang === "zh" ? "zh-CN" : "en", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) });
    case "minutes": return Number(value).toFixed(1);
    case "ratio": return Number(value).toFixed(2);
    case "bool": return value ? "✔" : "–";
    case "count": case "days": return num(value);
    default: return String(value);
  }
}

function reportTable(report, { columns = null, limit = 12 } = {}) {
  const cols = report.columns.filter((c) => !columns || columns.includes(c.name));
  const numeric = (c) => !["text", "date"].includes(c.unit) && !c.unit.startsWith("vocab:");
  const body = el("tbody", {});
  const fill = (n) => body.replaceChildren(...report.rows.slice(0, n).map((r) => el("tr", {},
    cols.map((c) => el("td", { class: numeric(c) ? "n" : null, "data-col": c.name }, cell(report, c, r[c.name]))))));
  fill(limit);
  const more = report.rows.length > limit ? el("button", { class: "link", type: "button", onclick: (e) => {
    const open = e.target.dataset.open !== "1";
    fill(open ? report.rows.length : limit);
    e.target.dataset.open = open ? "1" : "0";
    e.target.textContent = open ? t("reports.less") : t("reports.more", { n: report.rows.length });
  } }, t("reports.more", { n: report.rows.length })) : null;
  if (!report.rows.length) return el("p", { class: "muted" }, t("empty"));
  return el("div", { class: "scroll" }, el("table", { "data-testid": `report-${report.name}` },
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { class: numeric(c) ? "n" : null }, c.label)))), body), more);
}

const kpi = (testid, value, label) => el("div", { class: "stat", "data-testid": `kpi-${testid}` }, el("b", {}, value), el("span", {}, label));
const sum = (rows, key) => rows.reduce((a, r) => a + (r[key] || 0), 0);
const ratio = (a, b) => (b ? a / b : null);
const codeLabel = (report, column, value) => (report.value_labels[column] || {})[value] || value;

// an ECharts option with axes, a legend and a tooltip; `y` and `y2` name the axes, `percent` marks a share axis
function chartOption({ x, xName, series, y, y2 = null, percent = [false, false], stacked = false, log = false }) {
  const axis = (name, isPct) => ({ type: log ? "log" : "value", name, nameTextStyle: { align: "left" }, min: log ? null : 0,
    axisLabel: { formatter: isPct ? (v) => `${Math.round(v * 100)}%` : (v) => num(v) } });
  return {
    animation: false,
    textStyle: { fontFamily: getComputedStyle(document.documentElement).fontFamily },
    grid: { left: 56, right: y2 ? 56 : 24, top: 48, bottom: 48, containLabel: true },
    legend: { top: 0 },
    tooltip: { trigger: "axis", valueFormatter: (v) => (v === null || v === undefined ? "–" : Number.isInteger(v) ? num(v) : Number(v).toFixed(4)) },
    xAxis: { type: "category", data: x, name: xName, nameLocation: "middle", nameGap: 30, axisLabel: { hideOverlap: true } },
    yAxis: y2 ? [axis(y, percent[0]), axis(y2, percent[1])] : [axis(y, percent[0])],
    series: series.map((s) => ({ type: "bar", ...(stacked && s.type !== "line" ? { stack: "total" } : {}), ...s })),
  };
}

function chartBox(testid) { return el("div", { class: "chart", "data-testid": `chart-${testid}`, role: "img" }); }

function drawChart(box, option) {
  const chart = echarts.init(box, null, { renderer: "svg", locale: state.lang === "zh" ? "ZH" : "EN" });
  chart.setOption(option);
  box.setAttribute("aria-label", [option.legend && option.series.map((s) => s.name).join(", "), option.xAxis.name].filter(Boolean).join(" · "));
  charts.push(chart);
}

async function showReports(nav) {
  const lang = `?lang=${state.lang}`;
  const index = await nav.api(`/api/reports${lang}`);
  if (!index.observed_through) { nav.render(el("div", { class: "card" }, el("p", { class: "muted" }, t("reports.none")))); return; }
  const names = index.reports.map((r) => r.name);
  const got = await Promise.all(names.map((n) => nav.api(`/api/reports/${n}${lang}`)));
  const R = Object.fromEntries(names.map((n, i) => [n, got[i]]));
  const draw = [];
  const card = (name, stats, chart, tables) => el("div", { class: "card", "data-report": name },
    el("h2", {}, R[name].label), el("div", { class: "stats" }, stats), chart, tables);

  // check-in camps
  const camps = R.checkin_camps, daily = R.checkin_daily;
  const checkinBox = chartBox("checkin");
  draw.push(() => drawChart(checkinBox, chartOption({
    x: daily.rows.map((r) => r.day), xName: t("chart.day"), y: t("chart.in_camp"), y2: t("chart.checkin_rate"), percent: [false, true],
    series: [{ name: t("chart.in_camp"), data: daily.rows.map((r) => r.in_camp), itemStyle: { color: "#99d5cf" } },
      { name: t("chart.checkin_rate"), type: "line", yAxisIndex: 1, data: daily.rows.map((r) => r.checkin_rate), itemStyle: { color: "#0f766e" } }],
  })));
  const checkin = card("checkin_camps", [
    kpi("checkin_rate", pct(ratio(sum(camps.rows, "checkin_days"), sum(camps.rows, "camp_days"))), t("kpi.checkin_rate")),
    kpi("completion_21d", pct(ratio(sum(camps.rows, "completed_21d"), sum(camps.rows, "eligible_21d"))), t("kpi.completion_21d")),
    kpi("completion_28d", pct(ratio(sum(camps.rows, "completed_28d"), sum(camps.rows, "eligible_28d"))), t("kpi.completion_28d")),
    kpi("enrolled", num(sum(camps.rows, "enrolled")), t("kpi.enrolled"))],
  checkinBox, reportTable(camps, { columns: ["chat_id", "topic", "started_on", "enrolled", "still_in_group", "daily_checkin_rate", "completion_21d", "completion_28d"] }));

  // livestream sessions, oldest first on the chart
  const live = R.livestream_sessions;
  const sessions = [...live.rows].reverse();
  const closed = live.rows.filter((r) => r.window_closed);
  const liveBox = chartBox("livestream");
  draw.push(() => drawChart(liveBox, chartOption({
    x: sessions.map((r) => `${r.session_date} ${codeLabel(live, "platform", r.platform)}`), xName: t("chart.day"), y: t("chart.viewers"),
    series: [{ name: t("chart.viewers"), data: sessions.map((r) => r.viewers), itemStyle: { color: "#99d5cf" } },
      { name: t("chart.buyers_7d"), data: sessions.map((r) => r.buyers_7d), itemStyle: { color: "#b45309" } }],
  })));
  const livestream = card("livestream_sessions", [
    kpi("viewers", num(Math.round(ratio(sum(live.rows, "viewers"), live.rows.length) || 0)), t("kpi.viewers")),
    kpi("watch", (ratio(sum(live.rows, "watch_minutes"), sum(live.rows, "viewers")) || 0).toFixed(1), t("kpi.watch")),
    kpi("buyer_rate_7d", pct(ratio(sum(closed, "buyers_7d"), sum(closed, "viewers"))), t("kpi.buyer_rate_7d"))],
  liveBox, reportTable(live, { columns: ["session_date", "platform", "viewers", "watch_minutes_per_viewer", "product_clicks", "clicking_viewers", "buyers_7d", "orders_7d", "revenue_7d_cny", "buyer_rate_7d", "window_closed"] }));

  // first-order conversion: per channel (counts summed over its codes), then each channel and code
  const conv = R.first_order_conversion;
  const channels = [...new Set(conv.rows.map((r) => r.acquisition_channel))];
  const byChannel = channels.map((c) => { const rows = conv.rows.filter((r) => r.acquisition_channel === c);
    return { channel: c, c7: ratio(sum(rows, "converted_7d"), sum(rows, "prospects_7d")), c15: ratio(sum(rows, "converted_15d"), sum(rows, "prospects_15d")) }; });
  const convBox = chartBox("conversion");
  draw.push(() => drawChart(convBox, chartOption({
    x: byChannel.map((r) => codeLabel(conv, "acquisition_channel", r.channel)), y: t("chart.conversion"), percent: [true],
    series: [{ name: t("chart.conversion_7d"), data: byChannel.map((r) => r.c7), itemStyle: { color: "#99d5cf" } },
      { name: t("chart.conversion_15d"), data: byChannel.map((r) => r.c15), itemStyle: { color: "#0f766e" } }],
  })));
  const conversion = card("first_order_conversion", [
    kpi("conversion_7d", pct(ratio(sum(conv.rows, "converted_7d"), sum(conv.rows, "prospects_7d"))), t("kpi.conversion_7d")),
    kpi("conversion_15d", pct(ratio(sum(conv.rows, "converted_15d"), sum(conv.rows, "prospects_15d"))), t("kpi.conversion_15d")),
    kpi("prospects_15d", num(sum(conv.rows, "prospects_15d")), t("kpi.prospects_15d"))],
  convBox, reportTable(conv, { columns: ["acquisition_channel", "source_code", "members", "prospects", "prospects_15d", "converted_7d", "converted_15d", "conversion_7d", "conversion_15d"] }));

  // repurchase by category cycle
  const rep = R.repurchase_by_category;
  const repBox = chartBox("repurchase");
  draw.push(() => drawChart(repBox, chartOption({
    x: rep.rows.map((r) => codeLabel(rep, "category", r.category)), y: t("chart.repurchase_rate"), percent: [true],
    series: [{ name: t("chart.repurchase_rate"), data: rep.rows.map((r) => r.repurchase_rate), itemStyle: { color: "#0f766e" } }],
  })));
  const repurchase = card("repurchase_by_category", [
    kpi("repurchase", pct(ratio(sum(rep.rows, "repurchased"), sum(rep.rows, "eligible"))), t("kpi.repurchase"))],
  repBox, reportTable(rep));

  // lifecycle: members by stage at each week's end, and last week's moves
  const mig = R.lifecycle_migration;
  const weeks = [...new Set(mig.rows.map((r) => r.week_ending))];
  const stages = ["new", "active", "at_risk", "silent", "lost"];
  const colors = { new: "#60a5fa", active: "#0f766e", at_risk: "#f59e0b", silent: "#9ca3af", lost: "#b91c1c" };
  const migBox = chartBox("lifecycle");
  draw.push(() => drawChart(migBox, chartOption({
    x: weeks, xName: t("chart.week"), y: t("chart.members"), stacked: true,
    series: stages.map((s) => ({ name: codeLabel(mig, "to_stage", s), itemStyle: { color: colors[s] },
      data: weeks.map((w) => sum(mig.rows.filter((r) => r.week_ending === w && r.to_stage === s), "members")) })),
  })));
  const last = weeks[weeks.length - 1];
  const order = (s) => ["none", ...stages].indexOf(s);
  const lastRows = { ...mig, rows: mig.rows.filter((r) => r.week_ending === last)
    .sort((a, b) => order(a.from_stage) - order(b.from_stage) || order(a.to_stage) - order(b.to_stage)) };
  const lifecycle = card("lifecycle_migration", [], migBox,
    [el("h3", {}, t("migration.latest", { day: last || "–" })), reportTable(lastRows, { columns: ["from_stage", "to_stage", "members"], limit: 40 })]);

  // CAC and LTV per channel
  const eco = R.channel_economics;
  const ecoBox = chartBox("economics");
  draw.push(() => drawChart(ecoBox, chartOption({
    x: eco.rows.map((r) => codeLabel(eco, "acquisition_channel", r.acquisition_channel)), y: t("chart.cny_log"), log: true,
    series: [{ name: t("chart.cac"), data: eco.rows.map((r) => r.cac_cny), itemStyle: { color: "#b45309" } },
      { name: t("chart.ltv"), data: eco.rows.map((r) => r.ltv_to_date_cny), itemStyle: { color: "#0f766e" } }],
  })));
  const spend = sum(eco.rows, "spend_cny");
  const economics = card("channel_economics", [
    kpi("spend", cell(eco, { unit: "cny", name: "" }, spend), t("kpi.spend")),
    kpi("cac", cell(eco, { unit: "cny", name: "" }, ratio(spend, sum(eco.rows, "new_customers"))), t("kpi.cac")),
    kpi("ltv_cac", (ratio(sum(eco.rows, "net_revenue_cny"), spend) || 0).toFixed(2), t("kpi.ltv_cac"))],
  ecoBox, reportTable(eco));

  nav.render(el("div", {}, el("div", { class: "row" }, el("h1", {}, t("reports.title")), el("span", { class: "spacer" }),
    el("span", { class: "muted", "data-testid": "reports-through" }, t("reports.through", { day: index.observed_through }))),
  checkin, livestream, conversion, repurchase, lifecycle, economics));
  if (state.nav === nav) draw.forEach((f) => f());
}

function render(node) {
  const view = $("#view");
  disposeCharts();
  view.replaceChildren(node);
  view.dataset.ready = location.hash;
}

// One navigation at a time: a newer one aborts the older one's requests, and an older view that still
// finishes never replaces the newer one (a slow answer must not overwrite what the user asked for since).
function navigation() {
  if (state.nav) state.nav.controller.abort();
  const nav = { controller: new AbortController() };
  nav.api = (path, options = {}) => api(path, { ...options, signal: nav.controller.signal });
  nav.render = (node) => { if (state.nav === nav) render(node); };
  state.nav = nav;
  return nav;
}

async function route() {
  if (!state.token) { showSignIn(); return; }
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const nav = navigation();
  $("#loading").hidden = false;
  $("#view").setAttribute("aria-busy", "true");
  try {
    const member = parts[0] === "members" && parts[1];
    if (state.me && state.me.staff_id && !member) await showQueue(nav, state.me.staff_id);  // their queue, their members
    else if (state.me && state.me.store_id && !member && parts[0] !== "queue") await showQueues(nav);  // their store
    else if (parts[0] === "queue" && parts[1]) await showQueue(nav, parts[1]);
    else if (parts[0] === "queues") await showQueues(nav);
    else if (parts[0] === "segments" && parts[1]) await showSegment(nav, parts[1], params);
    else if (parts[0] === "members" && parts[1]) await showMember(nav, parts[1]);
    else if (parts[0] === "models") await showModels(nav);
    else if (parts[0] === "deliveries") await showDeliveries(nav);
    else if (parts[0] === "outcomes") await showOutcomes(nav);
    else if (parts[0] === "audit") await showAudit(nav);
    else if (parts[0] === "reports") await showReports(nav);
    else await showSegments(nav);
  } catch (err) {
    if (err.name === "AbortError" || state.nav !== nav) return;  // a newer navigation took over
    if (err.status !== 401) render(el("div", { class: "card" }, el("p", { class: "error" }, err.message)));
  } finally {
    if (state.nav === nav) { $("#loading").hidden = true; $("#view").removeAttribute("aria-busy"); }
  }
}

function showSignIn() {
  $("#signin").hidden = false;
  $("#view").replaceChildren();
  ["#nav", "#lookup", "#signout"].forEach((s) => { $(s).hidden = true; });
  $("#who").textContent = "";
}

async function signIn(token) {
  state.token = token;
  try {
    state.me = await api("/api/me");
  } catch (err) {
    state.token = null;
    $("#signin-error").textContent = t("signin.bad");
    return false;
  }
  sessionStorage.setItem("mf.token", token);
  state.labels = await api("/api/labels").catch(() => ({}));
  $("#signin").hidden = true;
  $("#signin-error").textContent = "";
  const staff = Boolean(state.me.staff_id);
  const manager = Boolean(state.me.store_id);
  ["#nav", "#signout"].forEach((s) => { $(s).hidden = false; });
  $("#lookup").hidden = staff || manager;  // staff and store managers work from queues: no lookups across members
  document.querySelectorAll("#nav a").forEach((a) => {
    a.hidden = staff ? a.id !== "nav-queue" : manager ? a.id !== "nav-queues" : a.id === "nav-queue";
  });
  $("#nav-audit").hidden = state.me.role !== "admin";
  $("#who").textContent = `${state.me.name} · ${lbl("api_role", state.me.role)}${state.me.store_id ? ` · ${state.me.store_id}` : ""}`;
  return true;
}

function signOut() {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("mf.token");
  showSignIn();
}

document.addEventListener("DOMContentLoaded", async () => {
  applyLanguage();
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("mf.lang", state.lang);
    applyLanguage();
    if (state.token) route();
  });
  $("#signout").addEventListener("click", signOut);
  $("#signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (await signIn($("#token").value.trim())) { $("#token").value = ""; route(); }
  });
  $("#lookup").addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = $("#lookup-value").value.trim();
    if (!value) return;
    try {
      const found = await api("/api/members/lookup", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ value }),
      });
      $("#lookup-value").value = "";
      location.hash = `#/members/${encodeURIComponent(found.member_id)}`;
    } catch (err) { toast(err.status === 404 ? t("member.notfound") : err.message); }
  });
  window.addEventListener("hashchange", route);
  if (state.token && await signIn(state.token)) route(); else showSignIn();
});
