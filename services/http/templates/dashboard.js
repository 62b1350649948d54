// Draws the regulator's dashboard from /regulator/api/compliance with plotly.js.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const LAYOUT = { margin: { t: 48, r: 16, b: 48, l: 56 }, legend: { orientation: "h", y: -0.18 } };
const CONFIG = { displaylogo: false, responsive: true };
const DAY_MS = 86400000;

function percent(rate) {
  return (100 * rate).toFixed(1) + " %";
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
    title: { text: "Real-name rate per operator (verified live cards / live cards)" },
    yaxis: { tickformat: ".0%", range: [0, 1.05], title: { text: "real-name rate" } },
    // One tick a day over a short history (not hours); plotly's own spacing over a long one.
    xaxis: { type: "date", tickformat: "%Y-%m-%d", dtick: spanDays <= 14 ? DAY_MS : undefined },
    height: 420,
  });
  return Plotly.newPlot("rate-chart", traces, layout, CONFIG);
}

function barChart(element, title, operators, series, barmode) {
  const names = operators.map((op) => op.operator);
  const totals = operators.map((op) => series.reduce((sum, [, field]) => sum + op[field], 0));
  const highest = Math.max(0, ...totals);
  const traces = series.map(([label, field, color]) => ({
    type: "bar",
    name: label,
    x: names,
    y: operators.map((op) => op[field]),
    marker: { color: color },
  }));
  return Plotly.newPlot(
    element,
    traces,
    Object.assign({}, LAYOUT, {
      title: { text: title },
      barmode: barmode,
      legend: Object.assign({}, LAYOUT.legend, { traceorder: "normal" }),
      // Whole-number ticks for small counts; plotly's own spacing once counts grow.
      yaxis: { rangemode: "tozero", dtick: highest <= 10 ? 1 : undefined, title: { text: "count" } },
      height: 360,
    }),
    CONFIG,
  );
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
    cell(row, percent(op.real_name_rate), "rate");
    const targets = op.targets.map((t) =>
      percent(t.rate) + " by " + t.due + ": " + (t.met ? "met" : t.shortfall_cards + " short"),
    );
    cell(row, targets.join("; "), op.targets.every((t) => t.met) ? "met" : "short");
    cell(row, op.disputes_opened + " / " + op.disputes_resolved);
    cell(row, op.agents_flagged + " / " + op.agents_suspended);
    cell(row, op.enforcement_actions);
    cell(row, op.licence_status);
  }
}

async function main() {
  const reply = await fetch("api/compliance", { headers: { Accept: "application/json" } });
  if (!reply.ok) throw new Error("the compliance figures could not be loaded: " + reply.status);
  const data = await reply.json();
  const computed = new Date(data.computed_at);
  document.getElementById("computed-at").dateTime = data.computed_at;
  document.getElementById("computed-at").textContent =
    computed.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  table(data);
  await Promise.all([
    rateChart(data),
    barChart("violations-chart", "Enforcement actions per operator", data.operators, [
      ["warnings", "warnings", "#f0ad4e"],
      ["fines", "fines", "#d9534f"],
      ["activation suspensions", "suspensions", "#6f42c1"],
    ], "stack"),
    barChart("disputes-chart", "Disputes per operator", data.operators, [
      ["opened", "disputes_opened", "#1f77b4"],
      ["resolved", "disputes_resolved", "#2ca02c"],
    ], "group"),
  ]);
  document.body.dataset.ready = "true";
}

main().catch((error) => {
  const shown = document.getElementById("error");
  shown.textContent = error.message;
  shown.hidden = false;
  document.body.dataset.ready = "error";
});
