// firstload.js measures the console's first load in Debian's chromium,
// with an empty cache, for make bench-api: the bytes on the wire (as
// encoded: gzip) of everything but the API, the time until the login form
// is there, and after logging in the time until the dashboard shows the
// nodes' charts. It prints NAME=value lines.
//
// Environment: CHROMIUM, TANDEM_URL, TANDEM_HOST, TANDEM_USER,
// TANDEM_PASSWORD, TANDEM_SPKI (the servers' key hashes, comma separated).
'use strict';
const { chromium } = require('playwright-core');

async function main() {
  const env = process.env;
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: [
      // Nothing but the cluster resolves: chromium sends nothing elsewhere.
      `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${env.TANDEM_HOST}`,
      `--ignore-certificate-errors-spki-list=${env.TANDEM_SPKI}`,
    ],
  });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    const urls = new Map();
    let staticBytes = 0;
    let staticRequests = 0;
    let apiBytes = 0;
    cdp.on('Network.requestWillBeSent', (e) => urls.set(e.requestId, e.request.url));
    cdp.on('Network.loadingFinished', (e) => {
      const url = urls.get(e.requestId) || '';
      if (new URL(url).pathname.startsWith('/api/')) {
        apiBytes += e.encodedDataLength;
      } else {
        staticBytes += e.encodedDataLength;
        staticRequests++;
      }
    });
    const start = Date.now();
    await page.goto(env.TANDEM_URL + '/', { waitUntil: 'commit' });
    await page.locator('#login-password').waitFor({ state: 'visible', timeout: 30000 });
    const loginReady = Date.now() - start;
    await page.fill('#login-user', env.TANDEM_USER);
    await page.fill('#login-password', env.TANDEM_PASSWORD);
    const submitted = Date.now();
    await page.locator('form.login-card button[type=submit]').click();
    // The dashboard is usable once it lists the nodes with their charts.
    await page.locator('.node-chart').first().waitFor({ state: 'visible', timeout: 30000 });
    const dashboardReady = Date.now() - submitted;
    // Let the page's last requests finish before counting.
    await page.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
    console.log(`FIRST_LOAD_BYTES=${staticBytes}`);
    console.log(`FIRST_LOAD_REQUESTS=${staticRequests}`);
    console.log(`API_BYTES=${apiBytes}`);
    console.log(`LOGIN_READY_MS=${loginReady}`);
    console.log(`DASHBOARD_READY_MS=${dashboardReady}`);
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
