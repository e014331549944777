// Opens a notebook in JupyterLab (`make lab`) in headless Chromium and waits for its kernel.
//
//   node check_lab.mjs --url http://127.0.0.1:PORT/lab/tree/notebooks/NAME.ipynb?token=TOKEN [--screenshot FILE]
//
// Reports (JSON on stdout; exit code 1 on any problem) whether the notebook's cells were drawn and
// when the kernel's status reached idle (epoch ms); as problems, any request to another host, any
// JavaScript error, a notebook that did not open or a kernel that never became idle.
import { cliArgs, servedPage } from "./served_page.mjs";

const args = cliArgs();
const url = new URL(args.url);
const WAIT_MS = 90000;
const problems = [];
const report = {};
const { browser, page } = await servedPage(url, { width: 1280, height: 900 }, problems);
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
