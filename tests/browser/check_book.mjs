// Opens a built book in headless Chromium and checks what a reader offline would see.
//
//   node check_book.mjs --base http://127.0.0.1:PORT/ [--start index.html] [--screenshots DIR]
//                       [--files DIR] [--shot PAGE:FILE.png]
//
// From the start page it visits every page of the site linked from the pages it has seen, and
// records every request. It reports (JSON on stdout; exit code 1 on any problem):
// - requests that failed or were answered with an HTTP error,
// - requests to any host other than the one serving the book (fonts and scripts included),
// - JavaScript errors and console errors,
// - dialogs (alert, confirm, prompt) a script opened: markup injected into a page that ran,
// - charts (div.book-chart, any .vega-embed) without an <svg> or <canvas> inside, or drawn wider
//   than the page's content column,
// - chart text smaller than 10 px on a 390 px wide screen (a phone), and table columns holding
//   one value in every row (a caption should say it once) or nothing at all,
// - math that MathJax did not typeset, widgets that the widget manager did not render,
// - attention explorers whose four panels are not different drawings, or whose view does not
//   change when a control moves (block, head, text head, image, mean over heads, raw / rollout,
//   a head picked in the overview, the overview's panel, seed, dataset), or that do not fit a
//   390 px wide screen (controls above four panels side by side, nothing past the screen's edge);
//   for each explorer it reports what it read after moving the block (the drawn state, the colour
//   bars' ranges, the hover texts of two patches and of one [EOS] bar) for the test to recompute;
// and, per page, every file loaded before any control moved (firstLoad) and after (laterLoads).
// Per page it also counts the code cells' inputs and how many of them a reader sees unopened, and
// where the chapter's answer box starts.
// The browser cache is off, so each page's firstLoad is everything a first visit transfers.
// --files DIR: the same book as a folder; its search page is opened from disk (file://) and the
// report says how many results it lists and whether it tells the reader how to serve the book.
// --shot PAGE:FILE.png: a screenshot of PAGE's first attention explorer (its viewport, at rest).
import { chromium } from "playwright-core";
import { CHROMIUM, cliArgs } from "./served_page.mjs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const args = cliArgs();
if (!args.base) {
  console.error("usage: node check_book.mjs --base http://127.0.0.1:PORT/ [--start index.html] [--screenshots DIR]");
  process.exit(2);
}
const base = new URL(args.base);
const MAX_PAGES = 200;
const WAIT_MS = 15000;
const PHONE = { width: 390, height: 844 };
const MIN_TEXT_PX = 10;

const problems = [];
const requests = [];
const pages = [];
let search = null;  // --files: the search page opened from disk

const userDataDir = mkdtempSync(join(tmpdir(), "book-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  ...CHROMIUM, headless: true, viewport: { width: 1280, height: 900 }, args: ["--headless", ...CHROMIUM.args],
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

// The smallest chart text as drawn, in CSS pixels: each SVG text's font size times the scale at
// which its SVG is drawn (a chart scaled down to fit a narrow column shrinks its text with it).
async function smallestChartText(page) {
  return page.evaluate(() => {
    let smallest = Infinity, where = "";
    for (const svg of document.querySelectorAll(".book-chart svg, .vega-embed svg")) {
      const box = svg.viewBox && svg.viewBox.baseVal;
      const scale = box && box.width ? svg.getBoundingClientRect().width / box.width : 1;
      for (const text of svg.querySelectorAll("text")) {
        if (!text.textContent.trim() || text.getBoundingClientRect().width === 0) continue;
        const size = parseFloat(getComputedStyle(text).fontSize) * scale;
        if (size < smallest) { smallest = size; where = text.textContent.trim().slice(0, 40); }
      }
    }
    return { px: smallest === Infinity ? null : Math.round(smallest * 10) / 10, text: where };
  });
}

// Columns of the pages' output tables (pandas' HTML) that hold one value in every row, or none.
async function constantColumns(page) {
  return page.evaluate(() => {
    const found = [];
    for (const table of document.querySelectorAll(".cell_output table, .output table")) {
      const rows = [...table.querySelectorAll("tbody tr")];
      if (rows.length < 2) continue;
      const header = [...table.querySelectorAll("thead tr:last-child th")].map((th) => th.textContent.trim());
      const width = Math.max(...rows.map((r) => r.children.length));
      for (let c = 0; c < width; c++) {
        const values = rows.map((r) => (r.children[c] ? r.children[c].textContent.trim() : ""));
        if (rows.some((r) => r.children[c] && r.children[c].tagName === "TH")) continue;  // an index column
        if (new Set(values).size === 1) found.push(`${header[c] || "column " + c} = "${values[0]}"`);
      }
    }
    return found;
  });
}

// What the explorer shows: every canvas's pixels, the bars and the numbers.
async function drawing(chart) {
  return chart.evaluate((el) =>
    [...el.querySelectorAll("canvas")].map((c) => c.toDataURL()).join("|") +
    [...el.querySelectorAll(".ae-bars, .ae-numbers, .ae-readout")].map((e) => e.innerHTML).join("|"));
}

// What a reader reads off the explorer in its current state: the colour bars' ranges and the
// hover texts of two patches (all four panels' values) and of the last [EOS] bar of each model.
async function probe(chart) {
  const state = await chart.evaluate((el) => ({ ...el.dataset }));
  const bars = await chart.evaluate((el) => Object.fromEntries([...el.querySelectorAll(".ae-colourbar")].map(
    (b) => [b.dataset.kind, [Number(b.dataset.min), Number(b.dataset.max)]])));
  const canvas = chart.locator('canvas[data-panel="W − CLIP"]');
  const box = await canvas.boundingBox();
  const hovers = [];
  for (const [fx, fy] of [[0.02, 0.02], [0.7, 0.4]]) {
    await canvas.hover({ position: { x: box.width * fx, y: box.height * fy } });
    hovers.push(await chart.locator(".ae-hover").evaluate((h) => ({ patch: Number(h.dataset.patch), text: h.textContent })));
  }
  const eos = [];
  for (const model of ["CLIP", "prompted"]) {
    const bar = chart.locator(`.ae-bars[data-model="${model}"] .ae-bar`).last();
    await bar.hover();
    eos.push({ model, index: (await chart.locator(`.ae-bars[data-model="${model}"] .ae-bar`).count()) - 1,
      text: await chart.locator(".ae-hover").textContent() });
  }
  return { state, bars, hovers, eos };
}

// At 390 px: the controls come before the panels, the four panels sit side by side, and no part of
// the explorer reaches past the screen's right edge.
async function narrowLayout(page, chart) {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const layout = await chart.evaluate((el) => {
    const rect = (e) => e.getBoundingClientRect();
    const panels = [...el.querySelectorAll("canvas[data-panel]")].map(rect);
    const widest = Math.max(rect(el).right, rect(el).left + el.scrollWidth);  // what scrolls inside (the [EOS] bars) is inside
    const culprits = [...el.querySelectorAll("*")].filter((e) => rect(e).right > window.innerWidth + 1 && !e.closest(".ae-text"))
      .slice(0, 3).map((e) => `${e.tagName.toLowerCase()}.${e.className} (${Math.round(rect(e).right)} px)`);
    return { width: window.innerWidth, widest, culprits, controlsBottom: rect(el.querySelector(".ae-controls")).bottom,
      readoutTop: rect(el.querySelector(".ae-readout")).top, panelTops: panels.map((r) => Math.round(r.top)),
      panelWidths: panels.map((r) => Math.round(r.width)) };
  });
  await page.setViewportSize({ width: 1280, height: 900 });
  const problems_ = [];
  if (layout.widest > layout.width + 1) problems_.push(`reaches ${Math.round(layout.widest)} px on a ${layout.width} px screen: ${layout.culprits.join(", ")}`);
  if (new Set(layout.panelTops).size !== 1 || layout.panelTops.length !== 4) problems_.push(`panels not side by side (tops ${layout.panelTops})`);
  if (Math.min(...layout.panelWidths) < 60) problems_.push(`panels only ${layout.panelWidths} px wide`);
  if (!(layout.controlsBottom <= layout.readoutTop && layout.readoutTop < layout.panelTops[0])) problems_.push("the controls and readout are not above the panels");
  return { layout, problems: problems_ };
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
    const moves = [  // [what, control, how: "max" | "last" | "check" | "click" | a value]
      ["block", 'input[name="block"]', "max"],
      ["head", 'input[name="head"]', "max"],
      ["overview", 'canvas.ae-head[data-head="0"]', "click"],  // back to head 0, from the overview
      ["text_head", 'input[name="text_head"]', "max"],
      ["image", 'select[name="image"]', "last"],
      ["mean_heads", 'input[name="mean_heads"]', "check"],
      ["rollout", 'select[name="view"]', "rollout"],
      ["raw", 'select[name="view"]', "raw"],
      ["overview_panel", 'select[name="overview_panel"]', "CLIP"],
      ["seed", 'select[name="seed"]', "last"],
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
      if (how === "click") await control.click();
      else await control.evaluate((input, how) => {
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
      if (what === "block") {  // past block 0 (where W/O equals CLIP) the four panels differ
        const panels = await chart.evaluate((el) => [...el.querySelectorAll("canvas[data-panel]")].map((c) => c.toDataURL()));
        result.panelsDiffer = panels.length === 4 && new Set(panels).size === 4;
        if (!result.panelsDiffer) problems.push(`${name}: explorer ${i}: the CLIP, W/O, W and W − CLIP panels are not four different drawings`);
        result.probe = await probe(chart);
      }
    }
    result.dataset_name = await chart.locator('select[name="dataset"]').inputValue();
    const narrow = await narrowLayout(page, chart);
    result.narrow = narrow.layout;
    narrow.problems.forEach((p) => problems.push(`${name}: explorer ${i} at 390 px: ${p}`));
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

  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
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

  for (const column of await constantColumns(page)) {
    problems.push(`${name}: a table column holds one value in every row: ${column}`);
  }

  info.code = await page.evaluate(() => {
    const inputs = [...document.querySelectorAll(".cell_input")];
    return { inputs: inputs.length, shown: inputs.filter((el) => el.checkVisibility()).length };
  });

  // Where a chapter's answer box starts (px from the top of the page; null: the page has none).
  info.answerTop = await page.evaluate(() => {
    const box = document.querySelector(".answer-box");
    return box ? Math.round(box.getBoundingClientRect().top + window.scrollY) : null;
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
  if (args.shot && args.shot.split(":")[0] === name) {
    const explorer = page.locator('.book-chart[data-book-chart="attention_explorer"]').first();
    await explorer.scrollIntoViewIfNeeded();
    await explorer.screenshot({ path: args.shot.split(":").slice(1).join(":") });
  }
  info.explorers = await checkExplorers(page, name);
  info.laterLoads = loaded.slice(info.firstLoad.length).map((r) => ({ ...r, url: new URL(r.url).pathname }));
  if (args.screenshots) {
    await page.screenshot({ path: join(args.screenshots, name.replace(/\//g, "__") + ".png"), fullPage: true });
  }
  if (info.charts.length) {  // the same page on a phone: charts scale down, their text must stay readable
    await page.setViewportSize(PHONE);
    await page.waitForTimeout(300);
    info.phoneText = await smallestChartText(page);
    if (info.phoneText.px !== null && info.phoneText.px < MIN_TEXT_PX) {
      problems.push(`${name}: chart text drawn at ${info.phoneText.px} px on a ${PHONE.width} px screen ` +
        `("${info.phoneText.text}"); make the chart narrower or its text larger`);
    }
    if (args.screenshots) {
      await page.screenshot({ path: join(args.screenshots, name.replace(/\//g, "__") + ".390px.png"), fullPage: true });
    }
  }
  const links = await page.evaluate(() => [...document.querySelectorAll("a[href]")].map((a) => a.href));
  await page.close();
  pages.push(info);
  return links;
}

// The search page opened from disk, searching for a word of the first page.
async function searchFromDisk(dir) {
  const page = await context.newPage();
  const url = new URL(`file://${dir.replace(/\/$/, "")}/search.html`);
  url.searchParams.set("q", "prompts");
  await page.goto(url.href);
  const listed = await page.waitForFunction(() => document.querySelectorAll("#search-results li").length, null,
    { timeout: WAIT_MS }).then((n) => n.jsonValue(), () => 0);
  const note = await page.locator(".search-from-disk").count();
  await page.close();
  if (!listed) problems.push("search.html from disk lists no result");
  if (!note) problems.push("search.html from disk does not say how to serve the book");
  return { listed, note: note === 1 };
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
  if (args.files) search = await searchFromDisk(args.files);
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

console.log(JSON.stringify({ ok: problems.length === 0, problems, pages, search, requests: requests.length }, null, 1));
process.exit(problems.length ? 1 : 0);
