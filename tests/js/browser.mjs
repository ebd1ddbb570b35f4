// Opens one page in headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM,
// driven by playwright-core: no browser download) and prints, one JSON object a
// line, what happens: console messages (`console`: type, text, args as JSON),
// uncaught errors (`pageerror`), responses (`response`: url, status) and failed
// requests (`requestfailed`: url, error). Stops once every NEEDLE has appeared
// in some printed line, or after TIMEOUT_MS; then prints {"done", "reached"}.
// Exits 0 either way: the Rust test (tests/browser.rs) judges what it saw.
//
//   node browser.mjs URL TIMEOUT_MS NEEDLE...
import { launchChromium } from "./chromium.mjs";

const [url, timeoutMs, ...needles] = process.argv.slice(2);

const started = Date.now();
const seen = [];
let resolveAll;
const allSeen = new Promise((resolve) => (resolveAll = resolve));
const print = (event) => {
  const line = JSON.stringify(event);
  console.log(line);
  seen.push(line);
  if (needles.every((needle) => seen.some((l) => l.includes(needle)))) resolveAll(true);
};

const browser = await launchChromium();
console.log(JSON.stringify({ launched: Date.now() - started }));
try {
  const page = await browser.newPage();
  page.on("console", async (message) => {
    const args = await Promise.all(
      message.args().map((arg) => arg.jsonValue().catch(() => null)),
    );
    print({ console: message.type(), text: message.text(), args });
  });
  page.on("pageerror", (error) => print({ pageerror: String(error) }));
  page.on("response", (response) => print({ response: response.url(), status: response.status() }));
  page.on("requestfailed", (request) =>
    print({ requestfailed: request.url(), error: request.failure()?.errorText ?? "" }),
  );
  await page.goto(url);
  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve(false), Number(timeoutMs))));
  const reached = await Promise.race([allSeen, timeout]);
  clearTimeout(timer);
  console.log(JSON.stringify({ done: true, reached, ms: Date.now() - started }));
} finally {
  await browser.close();
  console.log(JSON.stringify({ closed: Date.now() - started }));
}
