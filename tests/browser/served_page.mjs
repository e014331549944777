// What every browser check shares: its --name value arguments, and a headless Chromium page that
// records, as problems, JavaScript errors and any request to a host other than the one it checks.
import { chromium } from "playwright-core";

/** The command line's `--name value` pairs as an object. */
export function cliArgs() {
  return Object.fromEntries(
    process.argv.slice(2).reduce((pairs, arg, i, all) => {
      if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
      return pairs;
    }, []),
  );
}

/** Debian's Chromium, headless, with its background traffic (updates, sync, QUIC probes) off. */
export const CHROMIUM = {
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
};

/** A browser and a page of `viewport` whose errors and requests to hosts other than `base`'s go to
 * `problems`; `counter.requests` counts every request. */
export async function servedPage(base, viewport, problems, counter = { requests: 0 }) {
  const browser = await chromium.launch(CHROMIUM);
  const page = await browser.newPage({ viewport });
  page.on("pageerror", (err) => problems.push(`JavaScript error: ${err.message}`));
  page.on("request", (req) => {
    counter.requests++;
    const u = new URL(req.url());
    if (!["data:", "blob:", "about:"].includes(u.protocol) && !(u.hostname === base.hostname && u.port === base.port)) {
      problems.push(`request to another host: ${req.url()}`);
    }
  });
  return { browser, page };
}
