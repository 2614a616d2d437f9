// The console's one script, served by the console itself: the Copy button beside a new key,
// and the spend chart (stacked daily bars drawn as SVG from /ui/spend.json).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2b5fb4", "#e07b24", "#1b7a3a", "#b3261e", "#7b4fb8", "#0f8c8c",
                 "#c2477a", "#7a7a1b", "#5b6572", "#8f5b2e"];

function element(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function drawChart(figure, data) {
  const width = 900, height = 320, left = 92, bottom = 40, top = 10;
  const days = data.days;
  const totals = days.map((_, i) => data.series.reduce((sum, s) => sum + parseFloat(s.values[i]), 0));
  const max = Math.max(...totals, 0) || 1;
  const svg = element("svg", { viewBox: `0 0 ${width} ${height + 30 + 18 * Math.ceil(data.series.length / 4)}`,
                               role: "img", "aria-label": `Spend by ${data.group}, ${data.from} to ${data.to}` });
  const plot = height - bottom - top;
  const step = (width - left - 10) / Math.max(days.length, 1);
  // Axis and three gridlines, labelled in dollars.
  for (let i = 0; i <= 3; i++) {
    const y = top + plot - (plot * i) / 3;
    element("line", { x1: left, x2: width - 10, y1: y, y2: y, stroke: "#d9dee5" }, svg);
    const label = element("text", { x: left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6572" }, svg);
    label.textContent = "$" + ((max * i) / 3).toPrecision(3);
  }
  days.forEach((day, i) => {
    let y = top + plot;
    data.series.forEach((series, s) => {
      const value = parseFloat(series.values[i]);
      if (!(value > 0)) return;
      const h = (value / max) * plot;
      y -= h;
      const bar = element("rect", { x: left + i * step + 1, y, width: Math.max(step - 2, 1), height: h,
                                    fill: COLOURS[s % COLOURS.length], class: "bar" }, svg);
      element("title", {}, bar).textContent = `${day} ${series.name}: $${series.values[i]}`;
    });
    if (days.length <= 15 || i % Math.ceil(days.length / 15) === 0) {
      const label = element("text", { x: left + i * step + step / 2, y: height - bottom + 16,
                                      "text-anchor": "middle", "font-size": 10, fill: "#5b6572" }, svg);
      label.textContent = day.slice(5);
    }
  });
  data.series.forEach((series, s) => {
    const x = left + (s % 4) * 210, y = height + 10 + 18 * Math.floor(s / 4);
    element("rect", { x, y: y - 10, width: 12, height: 12, fill: COLOURS[s % COLOURS.length] }, svg);
    element("text", { x: x + 18, y, "font-size": 12, fill: "#1d232b" }, svg).textContent = series.name;
  });
  figure.replaceChildren(svg);
  figure.dataset.series = String(data.series.length);
  figure.dataset.drawn = "true";
}

document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("copy");
  if (button) {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch (_) {
        button.textContent = "Select and copy";
      }
    });
  }
  const figure = document.getElementById("chart");
  if (figure && figure.dataset.src) {
    fetch(figure.dataset.src, { credentials: "same-origin" })
      .then((response) => response.ok ? response.json() : Promise.reject(response.status))
      .then((data) => drawChart(figure, data))
      .catch((error) => { figure.textContent = `The chart could not be drawn (${error}).`; });
  }
});
