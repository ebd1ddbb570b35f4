// Drives the /admin page of a node in headless Chromium (Debian's
// /usr/bin/chromium, or $CHROMIUM, through playwright-core: no browser
// download) for tests/admin_page.rs, one command a line on stdin, one JSON
// answer a line on stdout. Besides the answers it prints what the page does
// wrong: console errors (`console`), uncaught errors (`pageerror`), and every
// response (`response`: url, status).
//
// Commands (JSON):
//   {"op":"open","url":U}                     → {"opened":U}
//   {"op":"wait","present":[[kind,id]…],"absent":[[kind,id]…],"timeout":MS}
//                                             → {"waited":bool,"ms":N,"shapes":[[kind,id]…]}
//     (shapes are the page's elements with data-kind and data-id)
//   {"op":"state"}                            → {"state":{url,formVisible,error,status,shapes,nodes}}
//     (nodes: each node shape's id → {state: its data-state, text: what it reads})
//   {"op":"submit","token":T}                 → {"submitted":true}
//   {"op":"screenshot","path":P}              → {"screenshot":P}
//   {"op":"quit"}                             → exits
import { createInterface } from "node:readline";
import { launchChromium } from "./chromium.mjs";

const print = (event) => console.log(JSON.stringify(event));

const browser = await launchChromium();
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
page.on("console", (message) => {
  if (message.type() === "error" || message.type() === "warning") {
    print({ console: message.type(), text: message.text() });
  }
});
page.on("pageerror", (error) => print({ pageerror: String(error) }));
page.on("response", (response) => print({ response: response.url(), status: response.status() }));

const shapes = () =>
  page.evaluate(() =>
    [...document.querySelectorAll("[data-kind][data-id]")].map((e) => [e.dataset.kind, e.dataset.id]),
  );
const has = (list, [kind, id]) => list.some(([k, i]) => k === kind && i === id);

async function wait({ present = [], absent = [], timeout = 10000 }) {
  const started = Date.now();
  for (;;) {
    const now = await shapes();
    const done = present.every((s) => has(now, s)) && !absent.some((s) => has(now, s));
    if (done || Date.now() - started > timeout) {
      return { waited: done, ms: Date.now() - started, shapes: now };
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const commands = createInterface({ input: process.stdin });
try {
  for await (const line of commands) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    switch (command.op) {
      case "open":
        await page.goto(command.url);
        print({ opened: command.url });
        break;
      case "wait":
        print(await wait(command));
        break;
      case "state":
        print({
          state: {
            url: page.url(),
            ...(await page.evaluate(() => ({
              formVisible: !document.getElementById("token-form").hidden,
              error: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
              status: document.getElementById("status").textContent,
              nodes: Object.fromEntries(
                [...document.querySelectorAll('[data-kind="node"]')].map((e) => [
                  e.dataset.id,
                  { state: e.dataset.state ?? null, text: [...e.querySelectorAll("text")].map((t) => t.textContent) },
                ]),
              ),
            }))),
            shapes: await shapes(),
          },
        });
        break;
      case "submit":
        await page.fill("#token", command.token);
        await page.press("#token", "Enter");
        print({ submitted: true });
        break;
      case "screenshot":
        await page.screenshot({ path: command.path, fullPage: true });
        print({ screenshot: command.path });
        break;
      case "quit":
        process.exitCode = 0;
        break;
      default:
        print({ unknown: command.op });
    }
    if (command.op === "quit") break;
  }
} finally {
  await browser.close();
}
