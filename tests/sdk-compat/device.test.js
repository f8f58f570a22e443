// The official device SDK (azure-iot-device + azure-iot-device-mqtt) and service SDK,
// unmodified, against iothubd's MQTT/TLS endpoint on 8883 and HTTPS on 443.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const mqtt = require('mqtt');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Client: ServiceClient } = require('azure-iothub');
const {
  serviceConnectionString, hostName, registry, createDevice, deviceToken, waitFor, desiredSubscriptionActive,
} = require('./helpers');

const service = ServiceClient.fromConnectionString(serviceConnectionString);

async function openDevice(connectionString) {
  const client = DeviceClient.fromConnectionString(connectionString, Mqtt);
  await client.open();
  return client;
}

test('direct method round trip passes the device-chosen status and payload', async () => {
  const device = await createDevice('method');
  const client = await openDevice(device.connectionString);
  try {
    let seen;
    client.onDeviceMethod('lockDoor', (request, response) => {
      seen = request.payload;
      response.send(201, { echo: request.payload, by: 'device' });
    });
    // connectTimeoutInSeconds lets the hub wait until the lazy SUBSCRIBE has landed.
    const { result } = await service.invokeDeviceMethod(device.deviceId, {
      methodName: 'lockDoor', payload: { lockTime: '10m' }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 5,
    });
    assert.equal(result.status, 201);
    assert.deepEqual(result.payload, { echo: { lockTime: '10m' }, by: 'device' });
    assert.deepEqual(seen, { lockTime: '10m' });
    const stats = (await registry.get(device.deviceId)).responseBody;
    assert.equal(stats.connectionState, 'Connected');
  } finally {
    await client.close();
  }
});

test('a method nobody answers times out with 504 at the requested timeout', async () => {
  const device = await createDevice('timeout');
  const client = await openDevice(device.connectionString);
  try {
    client.onDeviceMethod('other', (request, response) => response.send(200, null));
    await waitFor(async () => {
      try {
        await service.invokeDeviceMethod(device.deviceId, { methodName: 'other', responseTimeoutInSeconds: 5 });
        return true;
      } catch { return false; }
    }, 10000, 'method subscription');
    const started = Date.now();
    await assert.rejects(
      service.invokeDeviceMethod(device.deviceId, { methodName: 'unanswered', responseTimeoutInSeconds: 5 }),
      (err) => err.name === 'GatewayTimeoutError');
    const elapsed = (Date.now() - started) / 1000;
    assert.ok(elapsed >= 4.5 && elapsed <= 6.5, `504 after ${elapsed}s`);
  } finally {
    await client.close();
  }
});

test('methods on offline and unknown devices are 404', async () => {
  const device = await createDevice('offline');
  await assert.rejects(service.invokeDeviceMethod(device.deviceId, { methodName: 'lockDoor' }), (err) => {
    assert.equal(err.response.statusCode, 404);
    assert.match(err.responseBody, /404103/);
    return true;
  });
  await assert.rejects(service.invokeDeviceMethod('no-such-device-anywhere', { methodName: 'lockDoor' }),
    (err) => err.name === 'DeviceNotFoundError');
});

test('twin: reported to service, desired to device with $version, etag 412, null deletes', async () => {
  const device = await createDevice('twin');
  const client = await openDevice(device.connectionString);
  try {
    const twin = await client.getTwin();
    assert.equal(twin.properties.desired.$version, 1);
    await new Promise((resolve, reject) => twin.properties.reported.update({ temperature: 21, fw: { v: '1.0' } },
      (err) => (err ? reject(err) : resolve())));
    const serviceTwin = (await registry.getTwin(device.deviceId)).responseBody;
    assert.equal(serviceTwin.properties.reported.temperature, 21);
    assert.equal(serviceTwin.properties.reported.fw.v, '1.0');
    assert.equal(serviceTwin.properties.reported.$version, 2);

    const updates = [];
    twin.on('properties.desired', (delta) => updates.push(JSON.parse(JSON.stringify(delta))));
    await desiredSubscriptionActive(device.deviceId, updates);
    const current = (await registry.getTwin(device.deviceId)).responseBody;
    const updated = (await registry.updateTwin(device.deviceId, { properties: { desired: { building: 43, floor: 3 } } },
      current.etag)).responseBody;
    const version = updated.properties.desired.$version;
    await waitFor(() => updates.some((u) => u.$version === version), 10000, 'desired update');
    const delivered = updates.find((u) => u.$version === version);
    assert.equal(delivered.building, 43);
    assert.equal(delivered.floor, 3);

    await assert.rejects(registry.updateTwin(device.deviceId, { tags: { a: 1 } }, serviceTwin.etag),
      (err) => err.name === 'InvalidEtagError');

    await registry.updateTwin(device.deviceId, { properties: { desired: { floor: null } } }, '*');
    await waitFor(() => updates.some((u) => u.$version === version + 1), 10000, 'desired delete');
    const after = (await registry.getTwin(device.deviceId)).responseBody;
    assert.equal(after.properties.desired.floor, undefined);
    assert.equal(after.properties.desired.building, 43);
  } finally {
    await client.close();
  }
});

test('a device that reconnects gets its twin as it was left, with the changes made meanwhile', async () => {
  const device = await createDevice('reconnect');
  let client = await openDevice(device.connectionString);
  let twin = await client.getTwin();
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ battery: 80 }, (err) => (err ? reject(err) : resolve())));
  const reportedVersion = (await client.getTwin()).properties.reported.$version;
  await client.close();
  // While the device is away, the service changes desired.
  await registry.updateTwin(device.deviceId, { properties: { desired: { mode: 'away' } } }, '*');
  client = await openDevice(device.connectionString);
  try {
    twin = await client.getTwin();
    assert.equal(twin.properties.reported.battery, 80);
    assert.equal(twin.properties.reported.$version, reportedVersion);
    assert.equal(twin.properties.desired.mode, 'away');
    assert.equal(twin.properties.desired.$version, 2);
  } finally {
    await client.close();
  }
});

test('twin notifications keep flowing across token renewals (persistent session)', async () => {
  const device = await createDevice('renew');
  const client = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
  client.setOptions({ tokenRenewal: { tokenValidTimeInSeconds: 4, tokenRenewalMarginInSeconds: 2 } });
  await client.open();
  try {
    const twin = await client.getTwin();
    const updates = [];
    twin.on('properties.desired', (delta) => updates.push(JSON.parse(JSON.stringify(delta))));
    await desiredSubscriptionActive(device.deviceId, updates);
    // Wait for two renewals (every ~2 s: DISCONNECT, new CONNECT, no SUBSCRIBE).
    await new Promise((r) => setTimeout(r, 5000));
    const updated = (await registry.updateTwin(device.deviceId, { properties: { desired: { after: 'renewal' } } }, '*'))
      .responseBody;
    const version = updated.properties.desired.$version;
    await waitFor(() => updates.some((u) => u.$version === version && u.after === 'renewal'), 10000,
      'desired update after renewal');
    const fresh = await client.getTwin();
    assert.equal(fresh.properties.desired.after, 'renewal');
  } finally {
    await client.close();
  }
});

test('a disabled device is refused', async () => {
  const device = await createDevice('disabled', { status: 'disabled' });
  const client = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
  await assert.rejects(client.open());
});

function rawConnect(deviceId, password, extra = {}) {
  return mqtt.connect(`mqtts://${hostName}:8883`, {
    clientId: deviceId, username: `${hostName}/${deviceId}/?api-version=2021-04-12`, password,
    protocolVersion: 4, clean: false, reconnectPeriod: 0, connectTimeout: 5000, ...extra,
  });
}

test('raw MQTT: expired, forged and other-device tokens are refused', async () => {
  const a = await createDevice('rawa');
  const b = await createDevice('rawb');
  const attempts = [
    deviceToken(a.deviceId, a.key, -60),                           // expired
    deviceToken(a.deviceId, Buffer.alloc(32, 7).toString('base64')), // forged key
    deviceToken(b.deviceId, b.key),                                // b's token for a
  ];
  for (const password of attempts) {
    const c = rawConnect(a.deviceId, password);
    const err = await new Promise((resolve) => { c.once('error', resolve); c.once('connect', () => resolve(null)); });
    c.end(true);
    assert.ok(err && /Not authorized|Bad username/.test(err.message), `refused: ${err && err.message}`);
  }
});

test('raw MQTT: another device\'s topics are refused', async () => {
  const a = await createDevice('acla');
  const b = await createDevice('aclb');
  const c = rawConnect(a.deviceId, deviceToken(a.deviceId, a.key));
  await new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
  const granted = await new Promise((resolve, reject) => c.subscribe(
    [`devices/${b.deviceId}/messages/devicebound/#`, '$iothub/methods/POST/#'], { qos: 1 },
    (err, g) => (err ? reject(err) : resolve(g))));
  assert.equal(granted[0].qos, 128, 'foreign subscription refused');
  assert.notEqual(granted[1].qos, 128, 'own subscription granted');
  const closed = new Promise((resolve) => c.once('close', resolve));
  c.publish(`devices/${b.deviceId}/messages/events/`, 'spoof', { qos: 1 });
  await closed;  // the hub drops a connection that publishes to foreign topics
  c.end(true);
});

test('the MqttWs transport (MQTT over WebSocket on 443) works', async () => {
  const device = await createDevice('ws');
  const client = DeviceClient.fromConnectionString(device.connectionString, MqttWs);
  await client.open();
  try {
    client.onDeviceMethod('ping', (request, response) => response.send(200, { pong: request.payload }));
    const { result } = await service.invokeDeviceMethod(device.deviceId, {
      methodName: 'ping', payload: 7, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 5,
    });
    assert.equal(result.status, 200);
    assert.deepEqual(result.payload, { pong: 7 });
    const twin = await client.getTwin();
    await new Promise((resolve, reject) => twin.properties.reported.update({ via: 'websocket' },
      (err) => (err ? reject(err) : resolve())));
    const serviceTwin = (await registry.getTwin(device.deviceId)).responseBody;
    assert.equal(serviceTwin.properties.reported.via, 'websocket');
  } finally {
    await client.close();
  }
});

test('200 concurrent method calls are each answered to their own caller', async () => {
  const device = await createDevice('many');
  const client = await openDevice(device.connectionString);
  try {
    client.onDeviceMethod('echo', (request, response) => {
      // Answer out of order: later requests sometimes first.
      setTimeout(() => response.send(200 + (request.payload.n % 50), { n: request.payload.n }), Math.random() * 50);
    });
    await service.invokeDeviceMethod(device.deviceId, {
      methodName: 'echo', payload: { n: 0 }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 5,
    });
    const calls = [];
    for (let n = 0; n < 200; n++) {
      calls.push(service.invokeDeviceMethod(device.deviceId, { methodName: 'echo', payload: { n }, responseTimeoutInSeconds: 30 }));
    }
    const results = await Promise.all(calls);
    results.forEach(({ result }, n) => {
      assert.equal(result.status, 200 + (n % 50));
      assert.deepEqual(result.payload, { n });
    });
  } finally {
    await client.close();
  }
});

test('telemetry with properties is acknowledged', async () => {
  const device = await createDevice('telemetry');
  const client = await openDevice(device.connectionString);
  try {
    for (let i = 0; i < 5; i++) {
      const message = new Message(JSON.stringify({ temperature: 20 + i }));
      message.messageId = `m${i}`;
      message.contentType = 'application/json';
      message.properties.add('alert', i % 2 ? 'high temp' : 'ok');
      await client.sendEvent(message);  // resolves on the hub's PUBACK
    }
    const got = (await registry.get(device.deviceId)).responseBody;
    assert.notEqual(got.lastActivityTime, '0001-01-01T00:00:00Z');
  } finally {
    await client.close();
  }
});

test('disabling or deleting a connected device closes its connection', async () => {
  const disabled = await createDevice('kick');
  const client = await openDevice(disabled.connectionString);
  try {
    assert.equal((await registry.get(disabled.deviceId)).responseBody.connectionState, 'Connected');
    await registry.update({ deviceId: disabled.deviceId, status: 'disabled' });
    // The SDK retries, and every retry is refused while the device is disabled.
    await waitFor(async () => (await registry.get(disabled.deviceId)).responseBody.connectionState === 'Disconnected',
      10000, 'disabled device disconnected');
  } finally {
    await client.close();
  }

  const deleted = await createDevice('gone');
  const raw = rawConnect(deleted.deviceId, deviceToken(deleted.deviceId, deleted.key));
  await new Promise((resolve, reject) => { raw.once('connect', resolve); raw.once('error', reject); });
  const closed = new Promise((resolve) => raw.once('close', resolve));
  await registry.delete(deleted.deviceId);
  await closed;
  raw.end(true);
});
