// Usage: cost and tokens per day and per model, latency percentiles, the
// distribution of cost per conversation with its P95 marked, today's budget
// and the ops signals. Charts are Chart.js; each has a table beside it with
// the same figures, for screen readers and for copying.

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LineController,
  LineElement,
  LinearScale,
  PointElement,
  Title,
  Tooltip,
} from "chart.js";

import { api } from "./api.js";
import { $, count, el, millis, money, run } from "./dom.js";

Chart.register(BarController, BarElement, CategoryScale, LineController, LineElement, LinearScale, PointElement, Legend, Title, Tooltip);
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;
Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;

const COLORS = { cost: "#2f6fb3", input: "#6c9bd2", output: "#e39b3b", p50: "#2f8f5b", p95: "#e39b3b", p99: "#c0392b", p95Bucket: "#c0392b" };
const charts = new Map();

/// (Re)draws the chart on canvas `id`, or says there is nothing to draw.
function draw(id, config, empty) {
  charts.get(id)?.destroy();
  charts.delete(id);
  const canvas = $(`#${id}`);
  const note = canvas.parentElement.querySelector(".empty");
  canvas.hidden = empty;
  note.hidden = !empty;
  if (!empty) charts.set(id, new Chart(canvas, config));
}

/// Every UTC day from `from` to `to`, so days without calls show as zero, not as a gap.
function days(from, to) {
  const out = [];
  for (let d = new Date(from.toISOString().slice(0, 10)); d < to; d.setUTCDate(d.getUTCDate() + 1)) out.push(d.toISOString().slice(0, 10));
  return out;
}

function table(id, head, rows) {
  const node = $(`#${id}`);
  node.replaceChildren(
    node.querySelector("caption"),
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((cell) => el("td", {}, cell))))),
  );
}

export async function loadUsage() {
  const range = Number($("#usage-range").value);
  const to = new Date();
  const from = new Date(to.getTime() - range * 86_400_000);
  const window = `from=${from.toISOString()}&to=${to.toISOString()}`;
  const [byDay, byModel, byEndpoint, budget, signals] = await Promise.all([
    api(`/v1/usage?${window}&group_by=day`),
    api(`/v1/usage?${window}&group_by=model`),
    api(`/v1/usage?${window}&group_by=endpoint`),
    api("/v1/budget"),
    api("/v1/ops/signals"),
  ]);
  const none = byModel.groups.length === 0;
  $("#no-usage").hidden = !none;
  $("#usage-figures").hidden = none;

  const labels = days(from, to);
  const perDay = new Map(byDay.groups.map((g) => [g.key, g]));
  const series = (field) => labels.map((day) => perDay.get(day)?.[field] ?? 0);
  const latency = (field) => labels.map((day) => perDay.get(day)?.[field] ?? null);
  draw("cost-per-day", { type: "bar", data: { labels, datasets: [{ label: "Cost (USD)", data: series("cost_usd"), backgroundColor: COLORS.cost }] } }, none);
  draw(
    "tokens-per-day",
    {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: "Input tokens", data: series("input_tokens"), backgroundColor: COLORS.input },
          { label: "Output tokens", data: series("output_tokens"), backgroundColor: COLORS.output },
        ],
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true } } },
    },
    none,
  );
  draw(
    "latency-per-day",
    {
      type: "line",
      data: {
        labels,
        datasets: ["p50", "p95", "p99"].map((p) => ({ label: `${p} ms`, data: latency(`latency_${p}_ms`), borderColor: COLORS[p], backgroundColor: COLORS[p], spanGaps: true })),
      },
    },
    none,
  );
  const models = byModel.groups;
  draw(
    "cost-per-model",
    { type: "bar", data: { labels: models.map((g) => g.key), datasets: [{ label: "Cost (USD)", data: models.map((g) => g.cost_usd), backgroundColor: COLORS.cost }] }, options: { indexAxis: "y" } },
    none,
  );
  draw(
    "tokens-per-model",
    {
      type: "bar",
      data: {
        labels: models.map((g) => g.key),
        datasets: [
          { label: "Input tokens", data: models.map((g) => g.input_tokens), backgroundColor: COLORS.input },
          { label: "Output tokens", data: models.map((g) => g.output_tokens), backgroundColor: COLORS.output },
        ],
      },
      options: { indexAxis: "y", scales: { x: { stacked: true }, y: { stacked: true } } },
    },
    none,
  );
  const groupRow = (g) => [g.key, count(g.calls), count(g.failed_calls), count(g.input_tokens), count(g.output_tokens), money(g.cost_usd), millis(g.latency_p50_ms), millis(g.latency_p95_ms), millis(g.latency_p99_ms)];
  const head = ["Calls", "Failed", "Input tokens", "Output tokens", "Cost", "p50", "p95", "p99"];
  table("model-table", ["Model", ...head], models.map(groupRow));
  table("endpoint-table", ["Endpoint", ...head], byEndpoint.groups.map(groupRow));

  conversationCosts(byModel.conversations);
  showBudget(budget);
  showSignals(signals);
}

function conversationCosts(c) {
  $("#conversation-summary").replaceChildren(
    c.count === 0
      ? "No conversations in this range."
      : el("span", {}, `${count(c.count)} conversations · mean ${money(c.mean_cost_usd)} · p50 ${money(c.p50_cost_usd)} · `, el("strong", {}, `P95 ${money(c.p95_cost_usd)}`), ` · max ${money(c.max_cost_usd)}`),
  );
  const buckets = c.histogram;
  // The bucket that holds the P95 is drawn in red and named in the legend.
  const p95Bucket = buckets.findIndex((b, i) => c.p95_cost_usd <= b.to_usd || i === buckets.length - 1);
  draw(
    "conversation-costs",
    {
      type: "bar",
      data: {
        labels: buckets.map((b) => `${money(b.from_usd)}–${money(b.to_usd)}`),
        datasets: [
          {
            label: `Conversations (red: the bucket holding the P95, ${money(c.p95_cost_usd)})`,
            data: buckets.map((b) => b.conversations),
            backgroundColor: buckets.map((_, i) => (i === p95Bucket ? COLORS.p95Bucket : COLORS.cost)),
          },
        ],
      },
      options: { scales: { y: { ticks: { precision: 0 } }, x: { title: { display: true, text: "cost per conversation" } } } },
    },
    c.count === 0,
  );
}

function showBudget(budget) {
  const limits = budget.limits;
  const line = (name, period, limit) =>
    el(
      "li",
      {},
      `${name}: ${money(period.spent_usd)} spent, ${money(period.reserved_usd)} reserved`,
      limit == null ? ", no limit" : `, of ${money(limit)} (${money(period.remaining_usd)} left)`,
      `; resets ${new Date(period.resets_at).toLocaleString()}`,
    );
  const soft = limits.soft_usd_per_day == null ? null : el("li", {}, `Soft daily limit: ${money(limits.soft_usd_per_day)}` + (budget.soft_limit_crossed_at ? `, crossed at ${new Date(budget.soft_limit_crossed_at).toLocaleString()}` : ""));
  const tokens = limits.tokens_per_day == null ? null : el("li", {}, `Tokens per day: ${count(budget.day.spent_tokens)} of ${count(limits.tokens_per_day)}`);
  $("#budget").replaceChildren(...[line("Today", budget.day, limits.usd_per_day), line("This month", budget.month, limits.usd_per_month), soft, tokens].filter(Boolean));
}

function showSignals(signals) {
  $("#signals").replaceChildren(
    ...[
      ["Cold start", signals.cold_start],
      ["Retrieval", signals.retrieval],
      ["Embedding", signals.embedding],
    ].map(([name, s]) => el("li", {}, el("strong", { class: `verdict ${s.verdict}` }, `${name}: ${s.verdict}`), ` — ${s.reason}`)),
  );
}

export function wireUsage() {
  $("#usage-range").addEventListener("change", () => run(loadUsage));
}
