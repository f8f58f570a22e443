// Shared helpers of the SDK compatibility tests.
'use strict';
const crypto = require('node:crypto');
const { Registry } = require('azure-iothub');

const serviceConnectionString = process.env.IOTHUB_CONNECTION_STRING;
const hostName = /HostName=([^;]+)/.exec(serviceConnectionString)[1];
const registry = Registry.fromConnectionString(serviceConnectionString);

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

// Resolves when `predicate()` holds, polling; rejects after `timeoutMs`.
async function waitFor(predicate, timeoutMs = 10000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

module.exports = { serviceConnectionString, hostName, registry, unique, createDevice, deviceToken, waitFor };
