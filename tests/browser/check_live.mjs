// Drives the live explorer served by Voilà (`make explore`) in headless Chromium, as a reader would.
//
//   node check_live.mjs --url http://127.0.0.1:PORT/ --png FILE --text FILE [--rounds 10]
//
// Reports (JSON on stdout; exit code 1 on any problem): when the first view was drawn (epoch ms),
// the milliseconds from each block-slider key press to the redrawn panels, whether the panels'
// image data changed after moving the block slider, the head slider, "mean over heads", rollout,
// a query patch, a head of the overview and after uploading the PNG; the top-classes table as
// trained and with the bias term removed; the message after uploading a file that is no image;
// and, as problems, any request to another host, JavaScript error or console error.
import { cliArgs, servedPage } from "./served_page.mjs";

const args = cliArgs();
const base = new URL(args.url);
const rounds = Number(args.rounds || 10);
const WAIT_MS = 60000;
const problems = [];
const report = { changed: {} };

const counter = { requests: 0 };
const { browser, page } = await servedPage(base, { width: 1280, height: 1000 }, problems, counter);
page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console error: ${msg.text()}`); });

// The four panels' image bytes (ipywidgets serves them as blob: URLs), hashed.
async function panels() {
  return page.evaluate(async () => {
    const imgs = [...document.querySelectorAll("img.live-panel")];
    const hashes = await Promise.all(imgs.map(async (img) => {
      if (!img.src) return "";
      const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
      let h = 2166136261;
      for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
      return `${bytes.length}:${h}`;
    }));
    return hashes.join("|");
  });
}

async function changedFrom(before, timeout = WAIT_MS) {
  const start = Date.now();
  while (Date.now() - start < timeout) {
    const now = await panels();
    if (now !== before && !now.split("|").includes("")) return now;
    await page.waitForTimeout(10);
  }
  return null;
}

function slider(label) {
  return page.locator(".widget-slider", { has: page.locator(`.widget-label:text-is("${label}")`) }).locator(".noUi-handle");
}

async function step(what, act) {
  const before = await panels();
  await act();
  const after = await changedFrom(before);
  report.changed[what] = after !== null;
  if (after === null) problems.push(`${what}: the panels did not change`);
}

// FileUpload's file input is not in the page: its button opens the file chooser.
async function upload(file) {
  const [chooser] = await Promise.all([page.waitForEvent("filechooser"), page.locator(".widget-upload").click()]);
  await chooser.setFiles(file);
}

async function topTable() {
  return page.locator(".live-top table").evaluate((t) => ({
    header: [...t.querySelectorAll("thead th")].map((th) => th.textContent),
    rows: [...t.querySelectorAll("tbody tr")].map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent)),
  }));
}

try {
  await page.goto(base.href, { waitUntil: "domcontentloaded", timeout: WAIT_MS });
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll("img.live-panel")];
    return imgs.length === 4 && imgs.every((img) => img.src && img.complete && img.naturalWidth > 0);
  }, null, { timeout: WAIT_MS });
  report.firstViewAt = Date.now();
  report.panels = await page.locator("img.live-panel").count();
  report.readout = await page.locator(".live-readout").textContent();

  // The block slider, moved by keyboard, `rounds` times (0 → 1 → 0 ...): milliseconds from the key
  // press to the view of the new block (the readout names it; it is written after the panels).
  report.redrawMs = [];
  await slider("block").focus();
  for (let i = 0; i < rounds; i++) {
    const before = await panels();
    const start = Date.now();
    await page.keyboard.press(i % 2 === 0 ? "ArrowRight" : "ArrowLeft");
    const drawn = await page.waitForFunction((b) => (document.querySelector(".live-readout")?.textContent || "").includes(`block ${b},`),
      i % 2 === 0 ? 1 : 0, { timeout: WAIT_MS, polling: 5 }).then(() => true, () => false);
    const elapsed = Date.now() - start;
    if (!drawn || (await panels()) === before) { problems.push(`block slider move ${i}: the panels did not change`); break; }
    report.redrawMs.push(elapsed);
  }
  report.changed.block = report.redrawMs.length === rounds;
  await step("block_again", async () => { await slider("block").focus(); await page.keyboard.press("ArrowRight"); });
  await step("head", async () => { await slider("head").focus(); await page.keyboard.press("ArrowRight"); });
  await step("mean_heads", () => page.locator(".widget-checkbox", { hasText: "mean over heads" }).locator("input").click());
  await step("rollout", () => page.locator("button", { hasText: /^rollout$/ }).click());
  await step("attention", () => page.locator("button", { hasText: /^attention$/ }).click());
  await step("query_patch", () => page.locator(".query-patch").nth(5).click());
  await step("overview_head", () => page.locator(".overview-head").nth(1).click());

  report.trained = await topTable();
  await page.locator("button", { hasText: /^bias term removed$/ }).click();
  await page.waitForFunction(() => /bias term removed/.test(document.querySelector(".live-top thead")?.textContent || ""),
    null, { timeout: WAIT_MS });
  report.ablated = await topTable();

  await step("upload", () => upload(args.png));
  report.uploadMessage = await page.locator(".live-message").textContent();
  await upload(args.text);
  await page.waitForFunction(() => /not an image/.test(document.querySelector(".live-message")?.textContent || ""),
    null, { timeout: WAIT_MS }).catch(() => problems.push("a file that is no image: no message"));
  report.nonImageMessage = await page.locator(".live-message").textContent();
} catch (err) {
  problems.push(`${err.message}`);
  report.pageText = await page.evaluate(() => document.body.innerText.slice(0, 3000)).catch(() => "");
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: problems.length === 0, problems, requests: counter.requests, ...report }, null, 1));
process.exit(problems.length ? 1 : 0);
