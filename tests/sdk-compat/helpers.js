// Shared helpers of the SDK compatibility tests.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const https = require('node:https');
const { Registry, JobClient, Client: ServiceClient } = require('azure-iothub');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const serviceConnectionString = process.env.IOTHUB_CONNECTION_STRING;
const hostName = /HostName=([^;]+)/.exec(serviceConnectionString)[1];
const registry = Registry.fromConnectionString(serviceConnectionString);
const jobClient = JobClient.fromConnectionString(serviceConnectionString);
const serviceClient = ServiceClient.fromConnectionString(serviceConnectionString);

// run-suite --cluster: the nodes devices connect to, taken in turn (GatewayHostName= in the
// device connection string; the SAS token stays signed for HostName). Empty on one hub.
const deviceGateways = (process.env.IOTHUB_DEVICE_GATEWAYS || '').split(/\s+/).filter(Boolean);
let nextGateway = 0;
// The connection string of device `deviceId` with `key`, pointed at the next gateway node
// when there are any.
function deviceConnectionString(deviceId, key) {
  const base = `HostName=${hostName};DeviceId=${deviceId};SharedAccessKey=${key}`;
  if (deviceGateways.length === 0) return base;
  const gateway = deviceGateways[nextGateway++ % deviceGateways.length];
  return `${base};GatewayHostName=${gateway}`;
}

const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

// Creates a device and returns {deviceId, key, connectionString}.
async function createDevice(prefix, extra = {}) {
  const deviceId = unique(prefix);
  const created = (await registry.create({ deviceId, ...extra })).responseBody;
  const key = created.authentication.symmetricKey.primaryKey;
  return { deviceId, key, connectionString: deviceConnectionString(deviceId, key) };
}

// A device SAS token signed as the Node SDK signs it (docs/protocol.md §1.6).
function deviceToken(deviceId, key, lifetimeSeconds = 3600) {
  const sr = encodeURIComponent(`${hostName}/devices/${deviceId}`);
  const se = Math.ceil(Date.now() / 1000) + lifetimeSeconds;
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`;
}

// A service SAS token signed as the Node service SDK signs it (docs/protocol.md §1.7: raw host as
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
    return { deviceId, key, connectionString: deviceConnectionString(deviceId, key) };
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
// the continuation token explicitly (promise-style next() drops it, docs/protocol.md §8.6).
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

// ---- Restarting the hub (run-suite exports IOTHUBD_START, IOTHUBD_LOG, IOTHUBD_EXITS) ----
// Every hub of a run is started by $IOTHUBD_START (same binary, arguments, data dir and
// ports); it appends the hub's output to $IOTHUBD_LOG and "<pid> <exit status>" to
// $IOTHUBD_EXITS when the hub exits. run-suite stops whichever hub runs at the end.
const hubFile = () => path.join(process.env.IOTHUB_DATA_DIR, 'iothubd.json');

// The pid in iothubd.json (possibly stale after a kill -9), or null.
function hubPid() {
  try {
    return JSON.parse(fs.readFileSync(hubFile(), 'utf8')).pid || null;
  } catch {
    return null;  // absent, or (never seen: it is renamed into place) half written
  }
}

// Whether `pid` exists and is not a zombie (an exited process nobody reaped yet).
function processAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

// The exit status $IOTHUBD_START recorded for hub `pid` (137 after SIGKILL), or null.
function hubExitStatus(pid) {
  const lines = fs.readFileSync(process.env.IOTHUBD_EXITS, 'utf8').split('\n');
  const line = lines.find((l) => l.split(' ')[0] === String(pid));
  return line === undefined ? null : Number(line.split(' ')[1]);
}

// The hub log from byte `offset` on (all hubs of the run append to the same file).
const hubLogSize = () => fs.statSync(process.env.IOTHUBD_LOG).size;
function hubLog(offset = 0) {
  const data = fs.readFileSync(process.env.IOTHUBD_LOG);
  return data.subarray(Math.min(offset, data.length)).toString('utf8');
}

// Signals the serving hub (pid from iothubd.json) and resolves once it is gone, with
// {pid, status}: its exit status as recorded by $IOTHUBD_START (0 expected on SIGTERM,
// 137 on SIGKILL). Rejects past `timeoutMs`.
async function stopHub({ signal = 'SIGTERM', timeoutMs = 30000 } = {}) {
  const pid = hubPid();
  if (!pid || !processAlive(pid)) throw new Error(`no hub is running (iothubd.json pid ${pid})`);
  process.kill(pid, signal);
  await waitFor(() => !processAlive(pid), timeoutMs, `iothubd ${pid} to exit on ${signal}`);
  let status = null;
  await waitFor(() => (status = hubExitStatus(pid)) !== null, 5000, `the exit status of iothubd ${pid}`);
  return { pid, status };
}

// Starts a hub exactly as run-suite started the first one (detached, not keeping node
// alive) and resolves with {pid} once it serves (iothubd.json names it); `logLevel`
// replaces run-suite's log level. Rejects if it exits first or past `timeoutMs`, with the
// hub's log.
async function startHub({ logLevel = undefined, timeoutMs = 30000 } = {}) {
  const stale = hubPid();  // a kill -9'd hub leaves its iothubd.json behind
  if (stale && processAlive(stale)) throw new Error(`iothubd ${stale} is still running`);
  const offset = hubLogSize();
  const env = { ...process.env };
  if (logLevel) env.IOTHUBD_START_LOG_LEVEL = logLevel;
  else delete env.IOTHUBD_START_LOG_LEVEL;
  const wrapper = spawn(process.env.IOTHUBD_START, [], { detached: true, stdio: 'ignore', env });
  wrapper.unref();
  let exited = null;
  const onExit = (code, sig) => { exited = sig || code; };
  wrapper.once('exit', onExit);
  try {
    await waitFor(() => {
      if (exited !== null) throw new Error(`iothubd exited during startup (${exited}):\n${hubLog(offset)}`);
      const pid = hubPid();
      return pid !== null && pid !== stale && processAlive(pid);
    }, timeoutMs, 'the restarted iothubd to serve');
  } catch (err) {
    if (!err.message.includes('iothubd exited')) err.message += `\n--- hub log ---\n${hubLog(offset)}`;
    throw err;
  } finally {
    wrapper.removeListener('exit', onExit);
  }
  return { pid: hubPid() };
}

module.exports = {
  serviceConnectionString, hostName, deviceGateways, deviceConnectionString, registry, jobClient, serviceClient, unique, createDevice, deviceToken, waitFor,
  serviceToken, serviceRequest,
  mapLimit, createFleet, deviceIdIn, connectDevice, desiredSubscriptionActive, reportFromDevice,
  TERMINAL_JOB_STATUSES, waitForJob, readAllPages,
  hubPid, processAlive, hubExitStatus, hubLogSize, hubLog, stopHub, startHub,
};
