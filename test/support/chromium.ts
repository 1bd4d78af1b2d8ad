import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Headless Chromium for browser tests: Debian's package, installed on first use by
 * scripts/services/chromium.sh (CHROMIUM_PATH points at another binary), driven over the DevTools
 * protocol by puppeteer-core (which downloads no browser of its own).
 */
export async function launchChromium(): Promise<Browser> {
  const executablePath = execFileSync('bash', ['scripts/services/chromium.sh'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  return puppeteer.launch({
    executablePath,
    headless: true,
    // The sandbox needs user namespaces and refuses root: CI and the dev machines run tests as root.
    args: [...(process.getuid?.() === 0 ? ['--no-sandbox'] : []), '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
}

/**
 * A page that reaches only `origins`: anything else (web fonts, analytics) is refused, so that the
 * test neither depends on the internet nor waits on it.
 */
export async function offlinePage(browser: Browser, origins: string[]): Promise<Page> {
  const page = await browser.newPage();
  await page.setRequestInterception(true);
  page.on('request', (request) => {
    const url = request.url();
    if (url.startsWith('data:') || origins.some((origin) => url.startsWith(`${origin}/`) || url === origin)) void request.continue();
    else void request.abort('blockedbyclient');
  });
  return page;
}
