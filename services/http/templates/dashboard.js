// Draws the regulator's dashboard from /regulator/api/compliance with plotly.js.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const LAYOUT = { margin: { t: 48, r: 16, b: 48, l: 56 }, legend: { orientation: "h", y: -0.18 } };
const CONFIG = { displaylogo: false, responsive: true };
const DAY_MS = 86400000;

const NO_DATA = "no data";
const STAGE_COLORS = ["#2ca02c", "#f0ad4e", "#d9534f", "#6f42c1", "#17becf"];

function percent(rate) {
  return rate === null ? NO_DATA : (100 * rate).toFixed(1) + " %";
}

// The server's reporting time zone (China Standard Time, a fixed offset) as "YYYY-MM-DD HH:MM",
// so the time shown and the days charted are read on the same calendar.
function reportingTime(iso, offsetMinutes) {
  const shifted = new Date(Date.parse(iso) + offsetMinutes * 60000);
  return shifted.toISOString().slice(0, 16).replace("T", " ");
}

function rateChart(data) {
  const spanDays = (Date.parse(data.day) - Date.parse(data.first_day)) / DAY_MS;
  const traces = data.operators.map((op, i) => ({
    type: "scatter",
    mode: "lines+markers",
    name: op.operator + " (" + op.kind + ")",
    x: op.history.map((point) => point.day),
    y: op.history.map((point) => point.rate),
    line: { color: PALETTE[i % PALETTE.length], width: 2 },
  }));
  // A target is drawn as a dashed level across the days charted, named with its due date.
  data.targets.forEach((target, i) => {
    traces.push({
      type: "scatter",
      mode: "lines",
      name: "target " + percent(target.rate) + " by " + target.due,
      x: [data.first_day, data.day],
      y: [target.rate, target.rate],
      line: { dash: i % 2 ? "dot" : "dash", color: i % 2 ? "#000" : "#777", width: 1.5 },
      hoverinfo: "name",
    });
  });
  const layout = Object.assign({}, LAYOUT, {
    title: { text: "Real-name rate per operator (verified live cards / live cards; no point: no cards)" },
    yaxis: { tickformat: ".0%", range: [0, 1.05], title: { text: "real-name rate" } },
    // One tick a day over a short history (not hours); plotly's own spacing over a long one.
    xaxis: {
      type: "date", tickformat: "%Y-%m-%d", dtick: spanDays <= 14 ? DAY_MS : undefined,
      title: { text: "day (China Standard Time)" },
    },
    height: 420,
  });
  return Plotly.newPlot("rate-chart", traces, layout, CONFIG);
}

// Bars over categories `x`; `yaxis` names the axis (and may replace the tick rule).
function bars(element, title, x, traces, barmode, yaxis) {
  const highest = Math.max(0, ...x.map((_, i) =>
    barmode === "stack" ? traces.reduce((sum, t) => sum + t.y[i], 0)
      : Math.max(0, ...traces.map((t) => t.y[i]))));
  return Plotly.newPlot(
    element,
    traces.map((t) => Object.assign({ type: "bar", x: x }, t)),
    Object.assign({}, LAYOUT, {
      title: { text: title },
      barmode: barmode,
      legend: Object.assign({}, LAYOUT.legend, { traceorder: "normal" }),
      // Whole-number ticks for small counts; plotly's own spacing once counts grow.
      yaxis: Object.assign({ rangemode: "tozero", dtick: highest <= 10 ? 1 : undefined }, yaxis),
      height: 360,
    }),
    CONFIG,
  );
}

function barChart(element, title, operators, series, barmode) {
  const traces = series.map(([label, field, color]) => ({
    name: label, y: operators.map((op) => op[field]), marker: { color: color },
  }));
  return bars(element, title, operators.map((op) => op.operator), traces, barmode,
    { title: { text: "count" } });
}

function documentsChart(data) {
  const held = ["1 card", "2 cards", "3 cards", "4 cards", "5 cards", "6+ cards"];
  const traces = data.operators.map((op, i) => ({
    name: op.operator, y: op.documents_by_cards, marker: { color: PALETTE[i % PALETTE.length] },
  }));
  return bars("documents-chart", "Documents by number of cards held", held, traces, "group",
    { title: { text: "documents" } });
}

function stagesChart(data) {
  const traces = data.stages.map((stage, i) => ({
    name: stage, y: data.operators.map((op) => op.cards_by_stage[stage]),
    marker: { color: STAGE_COLORS[i % STAGE_COLORS.length] },
  }));
  return bars("stages-chart", "Live cards by deadline stage", data.operators.map((op) => op.operator),
    traces, "stack", { title: { text: "cards" } });
}

function finesChart(data) {
  const traces = [{
    name: "fines imposed (yuan)", y: data.operators.map((op) => op.fines_total_yuan),
    marker: { color: "#d9534f" },
  }];
  return bars("fines-chart", "Fine amounts per operator (yuan)",
    data.operators.map((op) => op.operator), traces, "group",
    { title: { text: "yuan" }, dtick: undefined });
}

function provincesChart(data) {
  const traces = [{
    name: "real-name rate", y: data.provinces.map((p) => p.real_name_rate),
    marker: { color: "#1f77b4" },
  }];
  return bars("provinces-chart", "Real-name rate by province of the document",
    data.provinces.map((p) => p.name), traces, "group",
    { title: { text: "real-name rate" }, tickformat: ".0%", dtick: 0.2, range: [0, 1.05] });
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = String(text);
  if (className) td.className = className;
  return td;
}

function table(data) {
  const body = document.querySelector("#figures tbody");
  body.replaceChildren();
  for (const op of data.operators) {
    const row = body.insertRow();
    row.dataset.operator = op.operator;
    cell(row, op.operator);
    cell(row, op.kind);
    cell(row, op.live_cards);
    cell(row, op.verified_cards);
    cell(row, percent(op.real_name_rate), op.real_name_rate === null ? "rate nodata" : "rate");
    if (op.real_name_rate === null) {
      cell(row, NO_DATA, "nodata");  // no live cards: nothing met, nothing short
    } else {
      const targets = op.targets.map((t) =>
        percent(t.rate) + " by " + t.due + ": " + (t.met ? "met" : t.shortfall_cards + " short"),
      );
      cell(row, targets.join("; "), op.targets.every((t) => t.met) ? "met" : "short");
    }
    cell(row, op.disputes_opened + " / " + op.disputes_resolved);
    cell(row, op.agents_flagged + " / " + op.agents_suspended);
    cell(row, op.enforcement_actions);
    cell(row, op.fines_total_yuan.toLocaleString("en-US"), "yuan");
    cell(row, op.licence_status);
  }
  const provinces = document.querySelector("#provinces tbody");
  provinces.replaceChildren();
  for (const p of data.provinces) {
    const row = provinces.insertRow();
    row.dataset.province = p.province;
    cell(row, p.province === "other" ? p.name : p.name + " (" + p.province + ")");
    cell(row, p.live_cards);
    cell(row, p.verified_cards);
    cell(row, percent(p.real_name_rate), "rate");
  }
}

async function main() {
  const reply = await fetch("api/compliance", { headers: { Accept: "application/json" } });
  if (!reply.ok) throw new Error("the compliance figures could not be loaded: " + reply.status);
  const data = await reply.json();
  document.getElementById("computed-at").dateTime = data.computed_at;
  document.getElementById("computed-at").textContent =
    reportingTime(data.computed_at, data.utc_offset_minutes);
  table(data);
  await Promise.all([
    rateChart(data),
    barChart("violations-chart", "Enforcement actions per operator", data.operators, [
      ["warnings", "warnings", "#f0ad4e"],
      ["fines", "fines", "#d9534f"],
      ["activation suspensions", "suspensions", "#6f42c1"],
      ["CA revocations", "ca_revocations", "#343a40"],
    ], "stack"),
    barChart("disputes-chart", "Disputes per operator", data.operators, [
      ["opened", "disputes_opened", "#1f77b4"],
      ["resolved", "disputes_resolved", "#2ca02c"],
    ], "group"),
    documentsChart(data),
    stagesChart(data),
    finesChart(data),
    provincesChart(data),
  ]);
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  const shown = document.getElementById("error");
  shown.textContent = error.message;
  shown.hidden = false;
  document.body.dataset.ready = "error";
});
