// Opens a notebook in JupyterLab (`make lab`) in headless Chromium and waits for its kernel.
//
//   node check_lab.mjs --url http://127.0.0.1:PORT/lab/tree/notebooks/NAME.ipynb?token=TOKEN [--screenshot FILE]
//
// Reports (JSON on stdout; exit code 1 on any problem) whether the notebook's cells were drawn and
// when the kernel's status reached idle (epoch ms); as problems, any request to another host, any
// JavaScript error, a notebook that did not open or a kernel that never became idle.
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const url = new URL(args.url);
const WAIT_MS = 90000;
const problems = [];
const report = {};
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.on("pageerror", (err) => problems.push(`JavaScript error: ${err.message}`));
page.on("request", (req) => {
  const u = new URL(req.url());
  if (!["data:", "blob:", "about:"].includes(u.protocol) && !(u.hostname === url.hostname && u.port === url.port)) {
    problems.push(`request to another host: ${req.url()}`);
  }
});
try {
  await page.goto(url.href, { waitUntil: "domcontentloaded", timeout: WAIT_MS });
  await page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first().waitFor({ timeout: WAIT_MS });
  // The toolbar names the kernel once one is attached; its execution indicator then says idle.
  await page.waitForFunction(() => {
    const name = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName");
    const status = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator");
    return name && !/no kernel/i.test(name.textContent) && status && status.dataset.status === "idle";
  }, null, { timeout: WAIT_MS, polling: 50 });
  report.idleAt = Date.now();
  report.cells = await page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").count();
  report.kernel = await page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName").first().textContent();
  if (args.screenshot) await page.screenshot({ path: args.screenshot });
} catch (err) {
  problems.push(err.message);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: problems.length === 0, problems, ...report }, null, 1));
process.exit(problems.length ? 1 : 0);
