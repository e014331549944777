// Opens a built book in headless Chromium and checks what a reader offline would see.
//
//   node check_book.mjs --base http://127.0.0.1:PORT/ [--start index.html] [--screenshots DIR]
//
// From the start page it visits every page of the site linked from the pages it has seen, and
// records every request. It reports (JSON on stdout; exit code 1 on any problem):
// - requests that failed or were answered with an HTTP error,
// - requests to any host other than the one serving the book (fonts and scripts included),
// - JavaScript errors and console errors,
// - dialogs (alert, confirm, prompt) a script opened: markup injected into a page that ran,
// - charts (div.book-chart, any .vega-embed) without an <svg> or <canvas> inside, or drawn wider
//   than the page's content column,
// - math that MathJax did not typeset, widgets that the widget manager did not render,
// - attention explorers whose three panels are not different drawings, or whose view does not
//   change when a control moves (block, head, text head, image, mean over heads, raw / rollout,
//   dataset);
// and, per page, every file loaded before any control moved (firstLoad) and after (laterLoads).
// Per page it also counts the code cells' inputs and how many of them a reader sees unopened.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
if (!args.base) {
  console.error("usage: node check_book.mjs --base http://127.0.0.1:PORT/ [--start index.html] [--screenshots DIR]");
  process.exit(2);
}
const base = new URL(args.base);
const MAX_PAGES = 200;
const WAIT_MS = 15000;

const problems = [];
const requests = [];
const pages = [];

const userDataDir = mkdtempSync(join(tmpdir(), "book-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

function isLocal(url) {
  const u = new URL(url);
  if (["data:", "blob:", "about:"].includes(u.protocol)) return true;
  return u.hostname === base.hostname && u.port === base.port;
}

function pageName(url) {
  return new URL(url).pathname.replace(/^\//, "") || "index.html";
}

async function renderedCharts(page) {
  return page.evaluate(() => {
    const charts = [...document.querySelectorAll(".book-chart, .vega-embed")];
    return charts.map((el) => {
      const drawn = el.querySelector("svg, canvas");
      const column = (el.closest("article") || document.querySelector("main") || document.body).getBoundingClientRect();
      return {
        kind: el.dataset.bookChart || "vega-embed",
        rendered: !!drawn,
        text: drawn ? "" : el.textContent.slice(0, 200),
        width: drawn ? Math.round(drawn.getBoundingClientRect().width) : 0,
        overflow: drawn ? Math.max(0, Math.round(drawn.getBoundingClientRect().right - column.right)) : 0,
      };
    });
  });
}

// What the explorer shows: every canvas's pixels, the bars and the numbers.
async function drawing(chart) {
  return chart.evaluate((el) =>
    [...el.querySelectorAll("canvas")].map((c) => c.toDataURL()).join("|") +
    [...el.querySelectorAll(".ae-bars, .ae-numbers")].map((e) => e.innerHTML).join("|"));
}

async function settle(page, chart, before) {
  let after = before;
  for (let waited = 0; waited < 5000; waited += 100) {
    await page.waitForTimeout(100);
    const state = await chart.getAttribute("data-state");
    after = await drawing(chart);
    if (state === "ready" && after !== before) break;
  }
  return after;
}

// Moves each control of each explorer (and picks another dataset) and records whether the view changed.
async function checkExplorers(page, name) {
  const explorers = await page.locator('.book-chart[data-book-chart="attention_explorer"]').all();
  const results = [];
  for (const [i, chart] of explorers.entries()) {
    await page.waitForFunction((el) => el.dataset.state === "ready", await chart.elementHandle(), { timeout: WAIT_MS })
      .catch(() => problems.push(`${name}: explorer ${i} never became ready`));
    const result = {};
    const moves = [  // [what, control, how: "max" | "last" | "check" | a value]
      ["block", 'input[name="block"]', "max"],
      ["head", 'input[name="head"]', "max"],
      ["text_head", 'input[name="text_head"]', "max"],
      ["image", 'select[name="image"]', "last"],
      ["mean_heads", 'input[name="mean_heads"]', "check"],
      ["rollout", 'select[name="view"]', "rollout"],
      ["raw", 'select[name="view"]', "raw"],
      ["dataset", 'select[name="dataset"]', "last"],
    ];
    for (const [what, selector, how] of moves) {
      const control = chart.locator(selector);
      if ((await control.count()) !== 1) {
        problems.push(`${name}: explorer ${i} has no control ${selector}`);
        continue;
      }
      if (how === "last" && (await control.evaluate((input) => input.options.length)) < 2) continue;  // nothing to pick
      const before = await drawing(chart);
      await control.evaluate((input, how) => {
        if (how === "max") input.value = input.max;
        else if (how === "last") input.selectedIndex = input.options.length - 1;
        else if (how === "check") input.checked = true;
        else input.value = how;
        input.dispatchEvent(new Event("input", { bubbles: true }));
        input.dispatchEvent(new Event("change", { bubbles: true }));
      }, how);
      const changed = (await settle(page, chart, before)) !== before;
      if (!changed) problems.push(`${name}: explorer ${i}: changing ${what} changed nothing`);
      result[what] = changed;
      if (what === "block") {  // past block 0 (where W/O equals CLIP) the three panels differ
        const panels = await chart.evaluate((el) => [...el.querySelectorAll("canvas[data-panel]")].map((c) => c.toDataURL()));
        result.panelsDiffer = panels.length === 3 && new Set(panels).size === 3;
        if (!result.panelsDiffer) problems.push(`${name}: explorer ${i}: the CLIP, W/O and W panels are not three different drawings`);
      }
    }
    result.dataset_name = await chart.locator('select[name="dataset"]').inputValue();
    results.push(result);
  }
  return results;
}

async function visit(url) {
  const name = pageName(url);
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`${name}: JavaScript error: ${err.message}`));
  page.on("dialog", async (dialog) => {
    problems.push(`${name}: a script opened a ${dialog.type()} dialog: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`${name}: console error: ${msg.text()}`);
  });
  let inFlight = 0;
  const loaded = [];
  page.on("requestfinished", async (req) => {
    inFlight--;
    if (req.url().startsWith("data:")) return;
    const sizes = await req.sizes().catch(() => null);
    loaded.push({ url: req.url(), bytes: sizes ? sizes.responseBodySize : 0 });
  });
  page.on("request", (req) => {
    inFlight++;
    requests.push({ page: name, url: req.url() });
    if (!isLocal(req.url())) problems.push(`${name}: request to another host: ${req.url()}`);
  });
  page.on("requestfailed", (req) => {
    inFlight--;
    problems.push(`${name}: request failed: ${req.url()} (${req.failure()?.errorText})`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400) problems.push(`${name}: HTTP ${res.status()} for ${res.url()}`);
  });

  await page.goto(url, { waitUntil: "networkidle" });
  const info = { page: name, charts: [], code: {}, math: 0, widgets: 0, explorers: [] };

  const expected = await page.locator(".book-chart, .vega-embed").count();
  if (expected) {
    await page
      .waitForFunction(
        () => [...document.querySelectorAll(".book-chart, .vega-embed")].every((el) => el.querySelector("svg, canvas")),
        null, { timeout: WAIT_MS })
      .catch(() => {});
    info.charts = await renderedCharts(page);
    for (const chart of info.charts) {
      if (!chart.rendered) problems.push(`${name}: a ${chart.kind} chart did not render: ${chart.text}`);
      if (chart.overflow > 1) problems.push(`${name}: a ${chart.kind} chart reaches ${chart.overflow} px past the content column`);
    }
  }

  info.code = await page.evaluate(() => {
    const inputs = [...document.querySelectorAll(".cell_input")];
    return { inputs: inputs.length, shown: inputs.filter((el) => el.checkVisibility()).length };
  });

  info.math = await page.locator(".math").count();
  if (info.math) {
    const typeset = await page
      .waitForFunction((n) => document.querySelectorAll("mjx-container").length >= n, info.math, { timeout: WAIT_MS })
      .then(() => true, () => false);
    if (!typeset) problems.push(`${name}: MathJax did not typeset the page's ${info.math} formulas`);
  }

  info.widgets = await page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count();
  const widgetState = await page.locator('script[type="application/vnd.jupyter.widget-state+json"]').count();
  if (info.widgets && !widgetState) {
    problems.push(`${name}: ${info.widgets} widget outputs but no saved widget state, so they show nothing ` +
      "(papermill does not save widget state: avoid tqdm.auto bars and widgets in executed notebooks)");
  } else if (info.widgets) {
    const shown = await page
      .waitForFunction((n) => document.querySelectorAll(".jupyter-widgets.widget-inline-hbox, .jupyter-widgets .widget-slider, .widget-slider").length >= n,
        info.widgets, { timeout: WAIT_MS })
      .then(() => true, () => false);
    if (!shown) problems.push(`${name}: the widget manager did not render the page's ${info.widgets} widgets`);
  }

  // Fonts and modules load lazily, after layout: wait until no request has been open for 500 ms.
  for (let quiet = 0, waited = 0; quiet < 500 && waited < WAIT_MS; waited += 50) {
    await page.waitForTimeout(50);
    quiet = inFlight > 0 ? 0 : quiet + 50;
  }
  info.firstLoad = loaded.map((r) => ({ ...r, url: new URL(r.url).pathname }));
  info.explorers = await checkExplorers(page, name);
  info.laterLoads = loaded.slice(info.firstLoad.length).map((r) => ({ ...r, url: new URL(r.url).pathname }));
  if (args.screenshots) {
    await page.screenshot({ path: join(args.screenshots, name.replace(/\//g, "__") + ".png"), fullPage: true });
  }
  const links = await page.evaluate(() => [...document.querySelectorAll("a[href]")].map((a) => a.href));
  await page.close();
  pages.push(info);
  return links;
}

try {
  const queue = [new URL(args.start || "index.html", base).href];
  const seen = new Set(queue);
  while (queue.length && pages.length < MAX_PAGES) {
    const links = await visit(queue.shift());
    for (const link of links) {
      const u = new URL(link);
      u.hash = "";
      if (!isLocal(u.href) || !u.pathname.endsWith(".html") || seen.has(u.href)) continue;
      seen.add(u.href);
      queue.push(u.href);
    }
  }
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

console.log(JSON.stringify({ ok: problems.length === 0, problems, pages, requests: requests.length }, null, 1));
process.exit(problems.length ? 1 : 0);
