// Headless Chromium for the page tests (tests/js/browser.mjs,
// tests/js/admin_map.mjs): Debian's /usr/bin/chromium, or $CHROMIUM, driven by
// playwright-core, so nothing is downloaded.
import { chromium } from "playwright-core";

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // The machine's network is closed: Chromium's own background traffic
    // would only fail, slowly.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
