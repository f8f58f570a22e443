// The web console (console/, served by iothubd at /ui) in headless Debian chromium, driven by
// playwright-core, against a real iothubd and a real device (build/bin/simdevice): sign in,
// create a device, see it connect, edit its twin, call a direct method, schedule a job with
// a target-count preview and watch it complete, run a query, read the statistics, sign out.
// Screenshots of every page go to $CONSOLE_ARTIFACTS (tests/console/run-suite sets it).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const https = require('node:https');
const { spawn, execFileSync } = require('node:child_process');
const { chromium } = require('playwright-core');

const repo = path.resolve(__dirname, '../..');
const iothubdPath = process.env.IOTHUBD || path.join(repo, 'build/bin/iothubd');
const simdevicePath = process.env.SIMDEVICE || path.join(path.dirname(iothubdPath), 'simdevice');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const artifacts = process.env.CONSOLE_ARTIFACTS || path.join(repo, 'build/test-artifacts/console');

// Resolves when `predicate()` holds, polling; rejects after `timeoutMs`.
async function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const state = { children: [], logs: {} };

// Starts a child process whose output is collected (and written to the artifacts at the end).
function start(name, file, args) {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  state.logs[name] = '';
  child.stdout.setEncoding('utf8').on('data', (c) => { state.logs[name] += c; });
  child.stderr.setEncoding('utf8').on('data', (c) => { state.logs[name] += c; });
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal || code)));
  state.children.push(child);
  return child;
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
  await child.exited;
  clearTimeout(timer);
}

// A service SAS token (docs/protocol.md §1.7), for checking through the REST API what the UI did.
function serviceToken(fields) {
  const se = Math.ceil(Date.now() / 1000) + 3600;
  const sig = crypto.createHmac('sha256', Buffer.from(fields.SharedAccessKey, 'base64'))
    .update(`${fields.HostName}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${fields.HostName}&sig=${encodeURIComponent(sig)}&skn=${fields.SharedAccessKeyName}&se=${se}`;
}

function rest(method, urlPath, { body, headers = {} } = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = https.request({
      host: '127.0.0.1', port: state.httpsPort, method, path: `${urlPath}${urlPath.includes('?') ? '&' : '?'}api-version=2021-04-12`,
      ca: fs.readFileSync(path.join(state.dataDir, 'tls', 'ca.pem')), checkServerIdentity: () => undefined,
      headers: {
        Authorization: serviceToken(state.fields), 'Content-Length': Buffer.byteLength(data),
        ...(body === undefined ? {} : { 'Content-Type': 'application/json; charset=utf-8' }), ...headers,
      },
    }, (response) => {
      let text = '';
      response.setEncoding('utf8').on('data', (c) => { text += c; });
      response.on('end', () => {
        const json = /application\/json/.test(response.headers['content-type'] || '') && text !== '';
        resolve({ status: response.statusCode, headers: response.headers, body: json ? JSON.parse(text) : text });
      });
    });
    request.on('error', reject);
    request.end(data);
  });
}

async function screenshot(page, name) {
  const file = path.join(artifacts, `${name}.png`);
  await page.evaluate(() => { document.querySelectorAll('.toast').forEach((t) => t.remove()); window.scrollTo(0, 0); });
  await page.screenshot({ path: file, fullPage: true });
  state.screenshots.push(file);
}

test('the web console drives a real hub and device in chromium', { timeout: 240000 }, async (t) => {
  fs.mkdirSync(artifacts, { recursive: true });
  for (const old of fs.readdirSync(artifacts)) fs.rmSync(path.join(artifacts, old), { force: true, recursive: true });
  state.screenshots = [];
  state.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'iothub-console-'));
  let browser;
  t.after(async () => {
    if (browser) await browser.close().catch(() => {});
    for (const child of state.children.reverse()) await stop(child);
    for (const [name, text] of Object.entries(state.logs)) fs.writeFileSync(path.join(artifacts, `${name}.log`), text);
    fs.rmSync(state.dataDir, { recursive: true, force: true });
    console.log(`console test artifacts (screenshots, logs) in ${artifacts}:`);
    for (const file of state.screenshots) console.log(`  ${file}`);
  });

  // The hub, on free ports, never 443/8883.
  const hub = start('iothubd', iothubdPath, ['--data-dir', state.dataDir, '--bind', '127.0.0.1',
    '--https-port', '0', '--mqtt-port', '0', '--amqp-port', '0', '--log-level', 'info']);
  await waitFor(() => {
    if (hub.exitCode !== null) throw new Error(`iothubd exited (${hub.exitCode}):\n${state.logs.iothubd}`);
    try {
      const info = JSON.parse(fs.readFileSync(path.join(state.dataDir, 'iothubd.json'), 'utf8'));
      if (info.pid !== hub.pid) return false;
      state.httpsPort = info.httpsPort;
      state.mqttPort = info.mqttPort;
      return true;
    } catch { return false; }
  }, 30000, 'iothubd to write iothubd.json');
  const connectionString = execFileSync(iothubdPath, ['connection-string', '--data-dir', state.dataDir], { encoding: 'utf8' }).trim();
  state.fields = Object.fromEntries(connectionString.split(';').map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
  const base = `https://127.0.0.1:${state.httpsPort}`;

  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  // The hub's certificate is signed by its own development CA, not one chromium knows.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(`page error: ${err.message}`));
  page.on('console', (m) => { if (/Content Security Policy|Uncaught/.test(m.text())) pageErrors.push(`console: ${m.text()}`); });
  page.on('dialog', (d) => d.accept());
  const deviceId = `console-${Date.now().toString(36)}`;

  await t.test('serves the console with its security headers', async () => {
    const response = await page.goto(`${base}/ui`);
    assert.equal(response.status(), 200);
    assert.equal(new URL(page.url()).pathname, '/ui/');
    const headers = response.headers();
    assert.equal(headers['content-security-policy'], "default-src 'self'; frame-ancestors 'none'");
    assert.equal(headers['x-content-type-options'], 'nosniff');
    await page.locator('#connection-string').waitFor();
    await screenshot(page, '01-sign-in');
  });

  await t.test('a wrong key is refused readably, the right one signs in', async () => {
    const wrong = connectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${Buffer.from('x'.repeat(32)).toString('base64')}`);
    await page.fill('#connection-string', wrong);
    await page.click('button[type=submit]');
    await page.locator('.alert-error').filter({ hasText: 'IotHubUnauthorizedAccess' }).waitFor();
    await page.fill('#connection-string', connectionString);
    await page.click('button[type=submit]');
    await page.locator('[data-testid=hub-name]').filter({ hasText: state.fields.HostName }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('iothub.connectionString')), connectionString);
  });

  let deviceConnectionString;
  await t.test('creates a device and shows its connection string', async () => {
    await page.locator('[data-testid=devices-table], .list-area .empty').first().waitFor();
    await page.fill('input[name=new-device-id]', deviceId);
    await page.click('text=Create device');
    await page.locator('[data-testid=device-id]').filter({ hasText: deviceId }).waitFor();
    const secret = page.locator('[data-testid=device-connection-string]');
    await waitFor(async () => ((await secret.getAttribute('data-value')) || '').includes('SharedAccessKey='), 10000, 'the connection string');
    deviceConnectionString = await secret.getAttribute('data-value');
    assert.match(deviceConnectionString, new RegExp(`^HostName=${state.fields.HostName};DeviceId=${deviceId};SharedAccessKey=.+`));
    const created = await rest('GET', `/devices/${deviceId}`);
    assert.equal(created.status, 200);
    assert.equal(deviceConnectionString.split('SharedAccessKey=')[1], created.body.authentication.symmetricKey.primaryKey);
  });

  let simdevice;
  await t.test('the device connects and the console shows it', async () => {
    simdevice = start('simdevice', simdevicePath, ['--connection-string', deviceConnectionString,
      '--ca', path.join(state.dataDir, 'tls', 'ca.pem'), '--endpoint', `127.0.0.1:${state.mqttPort}`]);
    await page.locator('.page-head .badges [data-status=connected]').waitFor({ timeout: 30000 });
    await page.goto(`${base}/ui/#/devices`);
    const row = page.locator('[data-testid=devices-table] tr', { hasText: deviceId });
    await row.locator('[data-status=connected]').waitFor({ timeout: 20000 });
    await screenshot(page, '02-devices');
  });

  await t.test('edits the twin\'s desired properties and the hub applies them', async () => {
    await page.click(`a:text-is("${deviceId}")`);
    const desired = page.locator('textarea[name=desired]');
    await waitFor(async () => (await desired.inputValue()).trim() !== '', 10000, 'the twin to load');
    await desired.fill(JSON.stringify({ building: 43, floor: 3 }, null, 2));
    await page.fill('textarea[name=tags]', JSON.stringify({ site: 'console-test' }, null, 2));
    await page.click('[data-testid=save-twin]');
    await page.locator('.toast', { hasText: 'Twin saved' }).waitFor();
    const twin = await rest('GET', `/twins/${deviceId}`);
    assert.equal(twin.status, 200);
    assert.equal(twin.body.properties.desired.building, 43);
    assert.equal(twin.body.properties.desired.floor, 3);
    assert.deepEqual(twin.body.tags, { site: 'console-test' });
    await waitFor(() => /Desired properties updated.*"building":43/.test(state.logs.simdevice), 15000, 'simdevice to receive the desired update');
  });

  await t.test('invokes a direct method and shows the answer', async () => {
    await page.fill('input[name=method-name]', 'lockDoor');
    await page.fill('textarea[name=method-payload]', '{"lockTime": "10m"}');
    await page.click('button:text-is("Invoke")');
    await page.locator('[data-testid=method-status]').filter({ hasText: '200' }).waitFor({ timeout: 20000 });
    assert.match(await page.locator('[data-testid=method-payload]').textContent(), /lockDoor called successfully/);
    await waitFor(() => state.logs.simdevice.includes('Locking Door!'), 10000, 'simdevice to print "Locking Door!"');
    await screenshot(page, '03-device');
  });

  const jobId = `console-job-${Date.now().toString(36)}`;
  await t.test('schedules a method job after previewing its targets and watches it complete', async () => {
    await page.goto(`${base}/ui/#/jobs/new`);
    await page.fill('input[name=job-id]', jobId);
    await page.fill('input[name=job-method-name]', 'lockDoor');
    await page.fill('textarea[name=query-condition]', `deviceId = '${deviceId}'`);
    // Starting a few seconds ahead, so the job page follows it live over the hub's event
    // stream (GET /jobs/v2/{id}/events).
    const start = await page.evaluate(() => {
      const d = new Date(Date.now() + 4000);
      const p = (n) => String(n).padStart(2, '0');
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    });
    await page.fill('input[name=job-start-time]', start);
    const submit = page.locator('button:text-is("Schedule job")');
    assert.equal(await submit.isDisabled(), true, 'scheduling waits for the preview');
    await page.click('[data-testid=preview-targets]');
    await page.locator('[data-testid=target-count]').filter({ hasText: /^1$/ }).waitFor();
    assert.equal(await submit.isDisabled(), false);
    await screenshot(page, '04-new-job');
    await submit.click();
    await page.locator('[data-testid=live-mode]', { hasText: 'event stream' }).waitFor();
    await page.locator('[data-testid=job-status] [data-status=completed]').waitFor({ timeout: 60000 });
    const row = page.locator('[data-testid=job-devices-table] tr', { hasText: deviceId });
    await row.locator('[data-status=completed]').waitFor();
    assert.match(await page.locator('[data-testid=live-mode]').textContent(), /finished/);
    await page.selectOption('select[name=device-status]', 'failed');
    await page.locator('.card', { hasText: 'Devices' }).locator('.empty').waitFor();
    await page.selectOption('select[name=device-status]', '');
    await row.waitFor();
    await screenshot(page, '05-job');
    const job = await rest('GET', `/jobs/v2/${jobId}`);
    assert.equal(job.body.status, 'completed');
    assert.equal(job.body.deviceJobStatistics.succeededCount, 1);
    await page.goto(`${base}/ui/#/jobs`);
    await page.locator('[data-testid=jobs-table] tr', { hasText: jobId }).locator('[data-status=completed]').waitFor();
    await screenshot(page, '06-jobs');
  });

  await t.test('schedules a twin job through the form', async () => {
    await page.goto(`${base}/ui/#/jobs/new`);
    await page.check('input[value=scheduleUpdateTwin]');
    await page.fill('textarea[name=job-desired]', '{"fromJob": 7}');
    await page.fill('textarea[name=query-condition]', "tags.site = 'console-test'");
    await page.click('[data-testid=preview-targets]');
    await page.locator('[data-testid=target-count]').filter({ hasText: /^1$/ }).waitFor();
    await page.click('button:text-is("Schedule job")');
    await page.locator('[data-testid=job-status] [data-status=completed]').waitFor({ timeout: 60000 });
    assert.equal((await rest('GET', `/twins/${deviceId}`)).body.properties.desired.fromJob, 7);
    // A condition the hub cannot parse is explained at the preview, and blocks scheduling.
    await page.goto(`${base}/ui/#/jobs/new`);
    await page.fill('textarea[name=query-condition]', 'tags.site = = 1');
    await page.click('[data-testid=preview-targets]');
    await page.locator('[data-testid=target-preview] .text-bad').waitFor();
    assert.equal(await page.locator('button:text-is("Schedule job")').isDisabled(), true);
  });

  await t.test('runs a query and shows the rows as a table and as JSON', async () => {
    await page.goto(`${base}/ui/#/query`);
    await page.fill('textarea[name=query]', `SELECT deviceId, connectionState, tags.site AS site FROM devices WHERE deviceId = '${deviceId}'`);
    await page.click('button:text-is("Run query")');
    const table = page.locator('[data-testid=query-table]');
    await table.locator('td', { hasText: deviceId }).waitFor();
    assert.match(await table.textContent(), /Connected/);
    assert.match(await table.textContent(), /console-test/);
    await screenshot(page, '07-query');
    await page.click('input[value=json]');
    const rows = JSON.parse(await page.locator('[data-testid=query-json]').textContent());
    assert.deepEqual(rows, [{ deviceId, connectionState: 'Connected', site: 'console-test' }]);
    // A query the hub refuses shows its error message.
    await page.fill('textarea[name=query]', 'SELECT FROM nowhere');
    await page.click('button:text-is("Run query")');
    await page.locator('.alert-error').waitFor();
  });

  await t.test('shows the hub statistics', async () => {
    await page.goto(`${base}/ui/#/statistics`);
    const total = page.locator('[data-testid=registry-stats] [data-key=totalDeviceCount] .tile-value');
    await total.filter({ hasText: '1' }).waitFor();
    await page.locator('[data-testid=service-stats] [data-key=connectedDeviceCount] .tile-value').filter({ hasText: '1' }).waitFor();
    await screenshot(page, '08-statistics');
  });

  await t.test('pages through the device list and searches it', async () => {
    const fleet = Array.from({ length: 12 }, (_, i) => `fleet-${String(i).padStart(2, '0')}`);
    for (const id of fleet) assert.equal((await rest('PUT', `/devices/${id}`, { body: { deviceId: id } })).status, 200);
    await page.goto(`${base}/ui/#/devices`);
    await page.selectOption('select[name=page-size]', '10');
    await page.locator('[data-testid=device-count]', { hasText: '13 devices' }).waitFor();
    const rows = page.locator('[data-testid=devices-table] tbody tr');
    await waitFor(async () => (await rows.count()) === 10, 10000, 'a first page of 10 devices');
    const firstPage = await rows.allTextContents();
    await page.click('button:text-is("Next →")');
    await waitFor(async () => (await rows.count()) === 3, 10000, 'a second page of 3 devices');
    const secondPage = await rows.allTextContents();
    for (const row of secondPage) assert.ok(!firstPage.includes(row), `${row} is on both pages`);
    assert.equal(await page.locator('button:text-is("Next →")').isDisabled(), true);
    await page.click('button:text-is("← Previous")');
    await waitFor(async () => (await rows.count()) === 10, 10000, 'the first page again');
    await page.fill('input[name=search]', 'fleet-1');
    await page.locator('[data-testid=device-count]', { hasText: '2 devices match' }).waitFor();
    assert.deepEqual((await page.locator('[data-testid=devices-table] tbody tr td:first-child').allTextContents()).sort(), ['fleet-10', 'fleet-11']);
    await page.selectOption('select[name=filter]', { label: 'Connected' });
    await page.fill('input[name=search]', '');
    await page.locator('[data-testid=device-count]', { hasText: '1 device matches' }).waitFor();
    for (const id of fleet) await rest('DELETE', `/devices/${id}`, { headers: { 'If-Match': '"*"' } });
  });

  await t.test('a narrow screen still reads well', async () => {
    await page.setViewportSize({ width: 420, height: 860 });
    await page.goto(`${base}/ui/#/devices/${encodeURIComponent(deviceId)}`);
    await page.locator('.page-head .badges [data-status=connected]').waitFor();
    await screenshot(page, '09-device-narrow');
    await page.setViewportSize({ width: 1360, height: 860 });
  });

  await t.test('disables and deletes from the list, and signs out', async () => {
    await page.goto(`${base}/ui/#/devices`);
    const row = page.locator('[data-testid=devices-table] tr', { hasText: deviceId });
    await row.locator('button:text-is("Disable")').click();
    await row.locator('[data-status=disabled]').waitFor();
    assert.equal((await rest('GET', `/devices/${deviceId}`)).body.status, 'disabled');
    await row.locator('button:text-is("Enable")').click();
    await row.locator('[data-status=enabled]').waitFor();
    await stop(simdevice);
    // A method call to the offline device shows the hub's error readably.
    await page.goto(`${base}/ui/#/devices/${encodeURIComponent(deviceId)}`);
    await page.locator('.page-head .badges [data-status=disconnected]').waitFor({ timeout: 20000 });
    await page.fill('input[name=method-name]', 'lockDoor');
    await page.click('button:text-is("Invoke")');
    await page.locator('[data-testid=method-result] .alert-error', { hasText: 'DeviceNotOnline' }).waitFor({ timeout: 20000 });
    await screenshot(page, '10-device-offline');
    await page.goto(`${base}/ui/#/devices`);
    await row.locator('button:text-is("Delete")').click();
    await page.locator('[data-testid=devices-table], .list-area .empty').first().waitFor();
    await waitFor(async () => (await rest('GET', `/devices/${deviceId}`)).status === 404, 10000, 'the device to be deleted');
    await page.click('#sign-out');
    await page.locator('#connection-string').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('iothub.connectionString')), null);
  });

  await t.test('a policy without RegistryRead signs in and sees what it may not do', async () => {
    const service = execFileSync(iothubdPath, ['connection-string', '--data-dir', state.dataDir, '--policy', 'service'], { encoding: 'utf8' }).trim();
    await page.fill('#connection-string', service);
    await page.click('button[type=submit]');
    await page.locator('#policy', { hasText: 'service' }).waitFor();
    await page.goto(`${base}/ui/#/statistics`);
    await page.locator('.alert-error', { hasText: 'RegistryRead' }).waitFor();
    await page.goto(`${base}/ui/#/jobs`);
    await page.locator('[data-testid=jobs-table] tr', { hasText: jobId }).waitFor();
    await page.click('#sign-out');
  });

  assert.deepEqual(pageErrors, []);
});
