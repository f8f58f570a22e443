// Shared helpers of the SDK compatibility tests.
'use strict';
const crypto = require('node:crypto');
const https = require('node:https');
const { Registry, JobClient, Client: ServiceClient } = require('azure-iothub');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const serviceConnectionString = process.env.IOTHUB_CONNECTION_STRING;
const hostName = /HostName=([^;]+)/.exec(serviceConnectionString)[1];
const registry = Registry.fromConnectionString(serviceConnectionString);
const jobClient = JobClient.fromConnectionString(serviceConnectionString);
const serviceClient = ServiceClient.fromConnectionString(serviceConnectionString);

const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

// Creates a device and returns {deviceId, key, connectionString}.
async function createDevice(prefix, extra = {}) {
  const deviceId = unique(prefix);
  const created = (await registry.create({ deviceId, ...extra })).responseBody;
  const key = created.authentication.symmetricKey.primaryKey;
  return { deviceId, key, connectionString: `HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${key}` };
}

// A device SAS token signed as the Node SDK signs it (reference §1.2).
function deviceToken(deviceId, key, lifetimeSeconds = 3600) {
  const sr = encodeURIComponent(`${hostName}/devices/${deviceId}`);
  const se = Math.ceil(Date.now() / 1000) + lifetimeSeconds;
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

// A service SAS token signed as the Node service SDK signs it (reference §1.2: raw host as
// `sr`, policy as `skn`).
function serviceToken(lifetimeSeconds = 3600) {
  const field = (name) => new RegExp(`${name}=([^;]+)`).exec(serviceConnectionString)[1];
  const se = Math.ceil(Date.now() / 1000) + lifetimeSeconds;
  const sig = crypto.createHmac('sha256', Buffer.from(field('SharedAccessKey'), 'base64'))
    .update(`${hostName}\n${se}`).digest('base64');
  const skn = field('SharedAccessKeyName');
  return `SharedAccessSignature sr=${hostName}&sig=${encodeURIComponent(sig)}&skn=${skn}&se=${se}`;
}

// A raw service REST call on https://<HostName>:443 (for what the SDK cannot send);
// resolves with {status, headers, body} where body is parsed JSON when it is JSON.
function serviceRequest(method, path, body = undefined, headers = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  const query = `${path.includes('?') ? '&' : '?'}api-version=2021-04-12`;
  return new Promise((resolve, reject) => {
    const request = https.request({
      host: hostName, port: 443, method, path: path + query,
      headers: {
        Authorization: serviceToken(), 'Content-Length': Buffer.byteLength(data),
        ...(body === undefined ? {} : { 'Content-Type': 'application/json; charset=utf-8' }), ...headers,
      },
    }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { text += chunk; });
      response.on('end', () => {
        const json = /application\/json/.test(response.headers['content-type'] || '') && text !== '';
        resolve({ status: response.statusCode, headers: response.headers, body: json ? JSON.parse(text) : text });
      });
    });
    request.on('error', reject);
    request.end(data);
  });
}

// Resolves when `predicate()` holds, polling; rejects after `timeoutMs`.
async function waitFor(predicate, timeoutMs = 10000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// Runs `fn` over `items` with at most `limit` calls in flight; resolves with the results in order.
async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

// Creates `count` devices named `<prefix>-<n>` under one fresh prefix (so that a query can
// select exactly them), each with the twin patch `twinFor(i)` applied when given.
// Returns {prefix, devices: [{deviceId, key, connectionString}]}.
async function createFleet(prefix, count, twinFor = null) {
  const base = unique(prefix);
  const devices = await mapLimit(Array.from({ length: count }, (_, i) => i), 8, async (i) => {
    const deviceId = `${base}-${String(i).padStart(3, '0')}`;
    const created = (await registry.create({ deviceId })).responseBody;
    const key = created.authentication.symmetricKey.primaryKey;
    const patch = twinFor && twinFor(i);
    if (patch) await registry.updateTwin(deviceId, patch, '*');
    return { deviceId, key, connectionString: `HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${key}` };
  });
  return { prefix: base, devices };
}

// `deviceId IN ['a', 'b', ...]` for a job's queryCondition.
const deviceIdIn = (devices) => `deviceId IN [${devices.map((d) => `'${d.deviceId}'`).join(', ')}]`;

const PING = 'compatPing';

// Opens `device` with the official device SDK and returns
// {client, calls, desired, close()}: `methods` maps method names to
// `(payload, deviceId) => {status, payload}` (or a promise of it), each call recorded in
// `calls` as {methodName, payload}. With `desired: true` every desired-property event is
// copied into `desired`. Resolves only once the hub routes methods (and desired updates)
// to the device, so a job started afterwards reaches it.
async function connectDevice(device, { methods = {}, desired = false, transport = Mqtt } = {}) {
  const client = DeviceClient.fromConnectionString(device.connectionString, transport);
  await client.open();
  const connected = { client, calls: [], desired: [], close: () => client.close() };
  try {
    for (const [methodName, handler] of Object.entries(methods)) {
      client.onDeviceMethod(methodName, async (request, response) => {
        connected.calls.push({ methodName, payload: request.payload });
        const answer = await handler(request.payload, device.deviceId);
        response.send(answer.status, answer.payload);
      });
    }
    // The SDK subscribes lazily; connectTimeoutInSeconds makes the hub wait for the
    // subscription (docs/decisions.md §15), so an answered ping proves it is in place.
    client.onDeviceMethod(PING, (request, response) => response.send(200, null));
    await serviceClient.invokeDeviceMethod(device.deviceId, {
      methodName: PING, responseTimeoutInSeconds: 15, connectTimeoutInSeconds: 15,
    });
    if (desired) {
      const twin = await client.getTwin();
      twin.on('properties.desired', (delta) => connected.desired.push(JSON.parse(JSON.stringify(delta))));
      await desiredSubscriptionActive(device.deviceId, connected.desired);
    }
  } catch (err) {
    await client.close();
    throw err;
  }
  return connected;
}

// The SDK says nothing when its desired subscription lands: poke desired (key
// `subscriptionProbe`) until a notification arrives in `updates`.
async function desiredSubscriptionActive(deviceId, updates, timeoutMs = 15000) {
  let probe = 0;
  await waitFor(async () => {
    probe += 1;
    await registry.updateTwin(deviceId, { properties: { desired: { subscriptionProbe: probe } } }, '*');
    const deadline = Date.now() + 300;
    while (Date.now() < deadline) {
      if (updates.some((u) => u.subscriptionProbe === probe)) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  }, timeoutMs, `desired subscription of ${deviceId}`);
}

// Connects a device, reports `patch` from it and disconnects.
async function reportFromDevice(device, patch) {
  const client = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
  await client.open();
  try {
    const twin = await client.getTwin();
    await new Promise((resolve, reject) => twin.properties.reported.update(patch,
      (err) => (err ? reject(err) : resolve())));
  } finally {
    await client.close();
  }
}

const TERMINAL_JOB_STATUSES = ['completed', 'failed', 'cancelled'];

// Polls getJob until `until(job)` holds (default: a terminal status) and returns
// {job, seen}: `seen` lists the distinct statuses observed, in order.
const isTerminal = (job) => TERMINAL_JOB_STATUSES.includes(job.status);
async function waitForJob(jobId, { until = isTerminal, timeoutMs = 30000, intervalMs = 100, seen = [] } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = (await jobClient.getJob(jobId)).jobStatus;
    if (seen[seen.length - 1] !== job.status) seen.push(job.status);
    if (until(job)) return { job, seen };
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for job ${jobId}: statuses seen ${seen.join(' -> ')}, `
        + `last ${JSON.stringify(job)}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// Reads every page of an SDK Query (registry.createQuery or jobClient.createQuery), passing
// the continuation token explicitly (promise-style next() drops it, reference §5.5).
// Returns {rows, pages: [{rows, continuation, itemType}]}; fails on more than `maxPages`
// pages, so a hub that never ends the paging does not hang the test.
async function readAllPages(query, { asTwin = false, maxPages = 50 } = {}) {
  const rows = [];
  const pages = [];
  while (query.hasMoreResults) {
    if (pages.length >= maxPages) throw new Error(`more than ${maxPages} pages: the paging never ends`);
    const token = query.continuationToken || undefined;
    const { result, message } = asTwin ? await query.nextAsTwin(token) : await query.next(token);
    const { 'x-ms-continuation': continuation, 'x-ms-item-type': itemType } = message.headers;
    pages.push({ rows: result, continuation, itemType });
    rows.push(...result);
  }
  return { rows, pages };
}

module.exports = {
  serviceConnectionString, hostName, registry, jobClient, serviceClient, unique, createDevice, deviceToken, waitFor,
  serviceToken, serviceRequest,
  mapLimit, createFleet, deviceIdIn, connectDevice, desiredSubscriptionActive, reportFromDevice,
  TERMINAL_JOB_STATUSES, waitForJob, readAllPages,
};
