// The console end to end, in headless Chromium (Debian's, driven by
// playwright-core): what a newcomer does on the first visit. Run by the Rust
// test `console::a_newcomer_uses_the_console_in_a_real_browser`, which starts
// stolid against the fake model server and passes:
//   STOLID_URL     the app's address
//   STOLID_KEY     a key of an empty tenant
//   CHAT_MODEL     the chat model, as the usage view names it
//   SCREENSHOTS    a folder for a screenshot of each page
//   CHROMIUM       the browser (default /usr/bin/chromium)
// Prints one line per step; exits 1 at the first that fails, saying why.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.STOLID_URL;
const apiKey = process.env.STOLID_KEY;
const chatModel = process.env.CHAT_MODEL;
const shots = process.env.SCREENSHOTS || "screenshots";
if (!base || !apiKey || !chatModel) throw new Error("set STOLID_URL, STOLID_KEY and CHAT_MODEL");
mkdirSync(shots, { recursive: true });

const HANDBOOK = `# Handbook

## Vacation

Employees get twenty five vacation days per year. Requests go to the team lead two weeks ahead.

## Equipment

Every new hire receives a laptop and a second screen on the first day.
`;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
page.setDefaultTimeout(20_000);
const problems = [];
// Chromium logs every 4xx as a console error; the wrong key's 401 is expected,
// so statuses are judged from the responses instead: no 5xx, ever.
page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && problems.push(`console error: ${m.text()}`));
page.on("response", (r) => r.status() >= 500 && problems.push(`${r.status()} from ${r.request().method()} ${r.url()}`));
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
// The console has no powers of its own: it loads its files and calls /v1, nothing else.
page.on("request", (r) => {
  const url = new URL(r.url());
  const own = url.origin === new URL(base).origin && (url.pathname.startsWith("/console") || url.pathname.startsWith("/v1/"));
  if (!own && !url.href.startsWith("data:")) problems.push(`request outside /console and /v1: ${r.method()} ${r.url()}`);
});

let failed = false;
async function step(name, action) {
  const started = Date.now();
  try {
    await action();
    // A missing field shows as a word the API never sends.
    const junk = (await page.locator("body").innerText()).match(/.{0,40}(\b(null|undefined|NaN)|\[object Object\]).{0,40}/);
    if (junk) problems.push(`the page shows "${junk[0]}"`);
    if (problems.length) throw new Error(problems.join("; "));
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed = true;
    console.log(`FAIL ${name}: ${error.message.split("\n")[0]}`);
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
    throw error;
  }
}
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const visible = (selector) => page.locator(selector).first().waitFor({ state: "visible" });
async function expectText(selector, pattern) {
  const locator = page.locator(selector).first();
  await locator.waitFor({ state: "visible" });
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await page.waitForTimeout(100)) {
    if (pattern.test(await locator.innerText())) return;
  }
  throw new Error(`${selector} never matched ${pattern}: "${(await locator.innerText()).slice(0, 300)}"`);
}

try {
  await step("a wrong key shows the API's error and stays signed out", async () => {
    await page.goto(`${base}/console`);
    await shot("01-sign-in");
    await page.getByLabel("API key").fill("stl_not_a_key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expectText("#error", /invalid API key.*\(unauthorized\)/);
    if (await page.locator("#nav").isVisible()) throw new Error("the navigation shows without a valid key");
    await shot("02-wrong-key");
  });

  await step("signing in with the keyboard alone opens an empty tenant's documents", async () => {
    await page.getByLabel("API key").fill(apiKey);
    await page.getByLabel("API key").press("Enter");
    await visible("#no-documents");
    await expectText("#who", /tenant .* provider/);
    if (await page.locator("#error").isVisible()) throw new Error(await page.locator("#error").innerText());
  });

  await step("an empty tenant's usage says so, and breaks nothing", async () => {
    await page.getByRole("button", { name: "Usage" }).click();
    await visible("#no-usage");
    if (await page.locator("#usage-figures").isVisible()) throw new Error("empty charts are drawn for an empty tenant");
    await expectText("#signals", /Cold start/);
    await shot("03-usage-empty");
  });

  await step("a Markdown file dropped with a collection and metadata reaches indexed; an image beside it is refused with the API's reason", async () => {
    await page.getByRole("button", { name: "Documents" }).click();
    await page.locator("#collection").fill("handbook");
    await page.getByLabel("Metadata (JSON object)").fill('{"team": "people"}');
    // A real drop event carrying a file, as a person dragging it from their desktop makes.
    await page.evaluate((text) => {
      const data = new DataTransfer();
      data.items.add(new File([text], "handbook.md", { type: "text/markdown" }));
      data.items.add(new File([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 13, 10, 26, 10])], "photo.png", { type: "image/png" }));
      document.querySelector("#drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
    }, HANDBOOK);
    await expectText("#upload-status", /^1 of 2 uploaded; 1 refused/);
    await expectText("#upload-refused", /^photo\.png: unsupported type image\/png.* \(unsupported_media_type\)$/);
    await expectText("#document-table tbody tr:has-text('handbook') .status", /^indexed$/);
    await shot("04-documents-indexed");
  });

  await step("the document view shows its chunks under their heading paths", async () => {
    await page.getByRole("link", { name: "handbook" }).first().click();
    await expectText("#document-facts", /handbook/);
    await expectText("#document-facts", /"team":"people"/);
    await expectText("#document-chunks", /Handbook › Equipment · \d+ tokens/);
    await expectText("#document-chunks", /twenty five vacation days/);
    await shot("05-document");
  });

  await step("typing a question suggests questions from the documents", async () => {
    await page.getByRole("button", { name: "Playground" }).click();
    await page.locator("#scope-collection").selectOption("handbook");
    await page.getByLabel("Ask your documents").pressSequentially("How many vacation days", { delay: 20 });
    await visible("#suggestions button.suggestion");
  });

  await step("the answer streams in, then cites the passage it came from", async () => {
    await page.getByLabel("Ask your documents").fill("How many vacation days do employees get?");
    await page.getByRole("button", { name: "Ask" }).click();
    // The fake model sends its words with a gap between them: text shows before the answer is done.
    await page.locator(".answer.streaming").first().waitFor({ state: "attached" });
    await page.waitForFunction(() => document.querySelector(".answer.streaming")?.textContent.length > 0);
    await visible("#transcript a.citation");
    await expectText("#transcript .turn.assistant", /twenty five vacation days/);
    await page.locator("#transcript a.citation").first().click();
    await visible("#passage");
    await expectText("#passage-source", /^\[1\] handbook\.md › Handbook$/);
    await expectText("#passage-text", /twenty five vacation days per year/);
    await expectText("#conversation-list", /vacation days/);
    await shot("06-chat-cited");
    await page.getByRole("button", { name: "Open in its document" }).click();
    await expectText("#document-chunks li.cited", /twenty five vacation days per year/);
    await page.getByRole("button", { name: "Playground" }).click();
    await expectText("#transcript .turn.assistant", /twenty five vacation days/);
  });

  await step("the agent shows its tool calls as it makes them, then answers with citations", async () => {
    await page.getByRole("button", { name: "New conversation" }).click();
    await page.locator("input[name=mode][value=agent]").check();
    await page.getByLabel("Ask your documents").fill("What does a new hire receive on the first day?");
    await page.getByRole("button", { name: "Ask" }).click();
    await expectText(".trace", /search_documents\(/);
    await visible("#transcript .turn.assistant a.citation");
    await expectText("#transcript .turn.assistant .answer", /laptop/);
    await shot("07-agent");
  });

  await step("a listed conversation opens with its messages and citations", async () => {
    await page.getByRole("link", { name: /How many vacation days/ }).click();
    await expectText("#conversation-title", /vacation days/);
    await expectText("#transcript .turn.user", /How many vacation days do employees get\?/);
    await visible("#transcript a.citation");
  });

  await step("usage shows the calls just made: per model, per day and per conversation", async () => {
    await page.getByRole("button", { name: "Usage" }).click();
    await expectText("#model-table tbody", new RegExp(chatModel.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
    await expectText("#endpoint-table tbody", /chat/);
    await expectText("#conversation-summary", /2 conversations .*P95 \$/);
    for (const id of ["cost-per-day", "tokens-per-day", "latency-per-day", "cost-per-model", "tokens-per-model", "conversation-costs"]) {
      if (!(await page.locator(`#${id}`).isVisible())) throw new Error(`the ${id} chart is not drawn`);
    }
    await expectText("#budget", /Today: \$/);
    await shot("08-usage");
  });

  await step("a reload keeps the session; signing out forgets the key", async () => {
    await page.reload();
    await visible("#model-table tbody tr");
    await page.getByRole("button", { name: "Sign out" }).click();
    await visible("#sign-in-form");
    if (await page.evaluate(() => sessionStorage.length) !== 0) throw new Error("the key is still in session storage");
  });
} catch {
  // Reported by step().
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
