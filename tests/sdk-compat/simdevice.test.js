// simdevice (our C++ device SDK) driven by the official service SDK, azure-iothub, unmodified:
// the reference scenario's lockDoor method and desired-property update, with the device
// connecting to the hub as localhost:8883 over TLS.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Client: ServiceClient } = require('azure-iothub');
const { serviceConnectionString, registry, createDevice, waitFor } = require('./helpers');

const service = ServiceClient.fromConnectionString(serviceConnectionString);

// SIMDEVICE, else the simdevice next to the iothubd run-suite started, else the release build.
function simdevicePath() {
  if (process.env.SIMDEVICE) return process.env.SIMDEVICE;
  if (process.env.IOTHUBD) {
    const sibling = path.join(path.dirname(process.env.IOTHUBD), 'simdevice');
    if (fs.existsSync(sibling)) return sibling;
  }
  return path.join(__dirname, '../../build/bin/simdevice');
}

// Starts simdevice and collects its output; `exited` resolves with its exit code.
function startSimdevice(connectionString) {
  const child = spawn(simdevicePath(), [
    '--connection-string', connectionString,
    '--ca', process.env.NODE_EXTRA_CA_CERTS,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const device = { child, stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (chunk) => { device.stdout += chunk; });
  child.stderr.setEncoding('utf8').on('data', (chunk) => { device.stderr += chunk; });
  device.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ? signal : code)));
  return device;
}

async function stopSimdevice(device) {
  if (device.child.exitCode === null && device.child.signalCode === null) device.child.kill('SIGTERM');
  const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 10000).unref());
  const status = await Promise.race([device.exited, timeout]);
  if (status === 'timeout') device.child.kill('SIGKILL');
  return status;
}

test('simdevice answers lockDoor and prints desired updates from the official service SDK', async () => {
  const { deviceId, connectionString } = await createDevice('simdevice');
  const device = startSimdevice(connectionString);
  const output = () => `\n--- simdevice stdout ---\n${device.stdout}--- stderr ---\n${device.stderr}`;
  let failure;
  try {
    // No wait for the device: connectTimeoutInSeconds makes the hub wait until it is online.
    const { result } = await service.invokeDeviceMethod(deviceId, {
      methodName: 'lockDoor', payload: { lockTime: '10m' }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 15,
    });
    assert.equal(result.status, 200);
    assert.deepEqual(result.payload, { Response: 'lockDoor called successfully' });
    await waitFor(() => device.stdout.includes('Locking Door!'), 10000, '"Locking Door!"');

    const updated = (await registry.updateTwin(deviceId, { properties: { desired: { building: 43, floor: 3 } } }, '*'))
      .responseBody;
    const version = updated.properties.desired.$version;
    const line = () => device.stdout.split('\n').find((l) => l.startsWith(`Desired properties updated (version ${version})`));
    await waitFor(() => line() !== undefined, 10000, 'the desired update');
    const patch = JSON.parse(line().slice(line().indexOf(':') + 1));
    assert.equal(patch.building, 43);
    assert.equal(patch.floor, 3);
    assert.equal(patch.$version, version);

    const twin = (await registry.getTwin(deviceId)).responseBody;
    assert.equal(twin.connectionState, 'Connected');
  } catch (err) {
    failure = err;
  }
  // Stopped in every case; a failure above is reported with the device's output.
  const status = await stopSimdevice(device);
  if (failure) {
    failure.message += `${output()}--- simdevice exit status: ${status} ---`;
    throw failure;
  }
  assert.equal(status, 0, `simdevice exit status${output()}`);
  assert.match(device.stdout, /^Stopped$/m);
});
