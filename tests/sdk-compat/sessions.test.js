// Persistent MQTT sessions across hub restarts (clean stop, and kill -9), with the official
// device SDK (azure-iot-device + azure-iot-device-mqtt) and service SDK (azure-iothub).
//
// What the Node device SDK does (azure-iot-device-mqtt 1.16.4, pinned): it connects with
// clean session 0 and, when the connection drops, reconnects by itself (retry policy), on a
// new mqtt.js client (reconnectPeriod 0, so mqtt.js never resubscribes). It then
//  - does NOT send SUBSCRIBE again for $iothub/twin/PATCH/properties/desired/# (nor
//    $iothub/twin/res/#): its twin client keeps its "subscribed" state across reconnects;
//  - DOES send SUBSCRIBE again for $iothub/methods/POST/#: Mqtt._configureEndpoints
//    rebuilds its topic table, "subscribed" flags included, on every connect, and the client
//    re-enables methods after a dropped connection.
// So for desired updates the unmodified SDK proves "without subscribing again"; for methods
// it cannot. The test therefore runs two devices through the same restarts:
//  - `plain`: the SDK as is. Desired updates and methods reach it; after the restart the
//    hub sees exactly one SUBSCRIBE from it, the methods one, and the SDK sent no other.
//  - `withheld`: the same SDK, except that a hook on its mqtt.js client does not send the
//    SUBSCRIBEs of reconnected connections (it tells the SDK they were granted). The hub
//    sees no SUBSCRIBE at all from it after the restart, and desired updates and methods
//    still reach it: the hub routes from the session it restored from its store.
// For both, the CONNACK after the restart has session-present 1 (seen by the SDK's mqtt.js
// client) and the hub logs the reconnect with `session present: true`. The hub's
// `device <id> subscribed to <filter>` lines are debug, so this test restarts the hub at
// --log-level debug first (the positive control: the first SUBSCRIBEs are logged), and
// leaves a hub at run-suite's level at the end.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const {
  registry, serviceClient, createDevice, waitFor, desiredSubscriptionActive, hubLog, hubLogSize, hubPid,
  processAlive, stopHub, startHub,
} = require('./helpers');

const DESIRED = '$iothub/twin/PATCH/properties/desired/#';
const TWIN_RESPONSES = '$iothub/twin/res/#';
const METHODS = '$iothub/methods/POST/#';

// Records, per mqtt.js connection the SDK opens, {clean, connack, attempted, sent}:
// `attempted` the topics the SDK asked mqtt.js to subscribe to, `sent` those that went out
// in SUBSCRIBE packets. With `withholdResubscribe`, the subscribes of every connection but
// the first are not sent, and the SDK is told they were granted. Hooks the mqttProvider of
// the SDK's MqttBase (client._transport._mqtt, an internal), so call it before open().
function observeWire(client, { withholdResubscribe = false } = {}) {
  const base = client._transport && client._transport._mqtt;
  assert.ok(base && base.mqttProvider && typeof base.mqttProvider.connect === 'function',
    'the SDK internals this test hooks (client._transport._mqtt.mqttProvider) changed');
  const provider = base.mqttProvider;
  const connections = [];
  base.mqttProvider = {
    connect(uri, options) {
      const mqttClient = provider.connect(uri, options);
      const connection = { clean: options.clean, connack: null, attempted: [], sent: [] };
      const withhold = withholdResubscribe && connections.length > 0;
      connections.push(connection);
      mqttClient.on('packetreceive', (packet) => {
        if (packet.cmd === 'connack') {
          connection.connack = { sessionPresent: packet.sessionPresent, returnCode: packet.returnCode };
        }
      });
      mqttClient.on('packetsend', (packet) => {
        if (packet.cmd === 'subscribe') connection.sent.push(...packet.subscriptions.map((sub) => sub.topic));
      });
      const subscribe = mqttClient.subscribe.bind(mqttClient);
      mqttClient.subscribe = (topic, opts, callback) => {
        connection.attempted.push(topic);
        if (!withhold) return subscribe(topic, opts, callback);
        process.nextTick(() => callback(null, [{ topic, qos: opts.qos }]));
        return mqttClient;
      };
      return mqttClient;
    },
  };
  return connections;
}

// Opens a new device with the SDK, a method handler (`whereAreYou`, echoing its payload)
// and a desired-properties listener; resolves once both subscriptions route.
async function openDevice(prefix, wireOptions) {
  const device = await createDevice(prefix);
  const client = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
  const d = { ...device, client, wire: observeWire(client, wireOptions), connects: 0, calls: [], updates: [] };
  client.on('connect', () => { d.connects += 1; });
  await client.open();
  try {
    client.onDeviceMethod('whereAreYou', (request, response) => {
      d.calls.push(request.payload);
      response.send(200, { here: request.payload });
    });
    const twin = await client.getTwin();
    twin.on('properties.desired', (delta) => d.updates.push(JSON.parse(JSON.stringify(delta))));
    // The SDK subscribes lazily: connectTimeoutInSeconds waits for the method subscription,
    // and desiredSubscriptionActive pokes desired until a notification arrives.
    await serviceClient.invokeDeviceMethod(device.deviceId, {
      methodName: 'whereAreYou', payload: 'before', responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10,
    });
    await desiredSubscriptionActive(device.deviceId, d.updates);
  } catch (err) {
    await client.close();
    throw err;
  }
  return d;
}

// The filters the hub logged as subscribed by `deviceId` in `log`.
const hubSubscribes = (log, deviceId) => log.split('\n')
  .map((line) => line.split(`device ${deviceId} subscribed to `)[1])
  .filter((filter) => filter !== undefined).map((filter) => filter.trim());

// (a) a desired update and (b) a method call from the service reach device `d`.
async function assertDelivery(d, tag) {
  const updated = (await registry.updateTwin(d.deviceId, { properties: { desired: { afterRestart: tag } } }, '*'))
    .responseBody;
  const version = updated.properties.desired.$version;
  await waitFor(() => d.updates.some((u) => u.$version === version), 10000, `the desired update at ${d.deviceId}`);
  assert.equal(d.updates.find((u) => u.$version === version).afterRestart, tag);
  // connectTimeoutInSeconds only lets the hub wait for a subscription to appear; whether one
  // was sent is asserted separately.
  const { result } = await serviceClient.invokeDeviceMethod(d.deviceId, {
    methodName: 'whereAreYou', payload: tag, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 5,
  });
  assert.equal(result.status, 200);
  assert.deepEqual(result.payload, { here: tag });
  assert.equal(d.calls[d.calls.length - 1], tag);
}

test('desired updates and methods reach SDK devices after hub restarts from the restored session',
  { timeout: 90000 }, async (t) => {
    await stopHub();
    await startHub({ logLevel: 'debug' });
    const devices = [];
    try {
      const logFrom = hubLogSize();
      const plain = await openDevice('session-plain');
      devices.push(plain);
      const withheld = await openDevice('session-withheld', { withholdResubscribe: true });
      devices.push(withheld);

      // Positive control: the first connection subscribed, and both the hub and the wire show it.
      for (const d of devices) {
        const logged = hubSubscribes(hubLog(logFrom), d.deviceId);
        for (const filter of [METHODS, TWIN_RESPONSES, DESIRED]) {
          assert.ok(logged.includes(filter), `hub logged ${d.deviceId} subscribing to ${filter}: ${logged}`);
          assert.ok(d.wire[0].sent.includes(filter), `SDK sent SUBSCRIBE ${filter}: ${d.wire[0].sent}`);
        }
        assert.equal(d.wire.length, 1);
        assert.equal(d.wire[0].clean, false, 'the SDK asks for a persistent session');
        assert.deepEqual(d.wire[0].connack, { sessionPresent: false, returnCode: 0 });
      }

      for (const signal of ['SIGTERM', 'SIGKILL']) {
        await t.test(`after ${signal === 'SIGTERM' ? 'a clean stop' : 'kill -9'} and a restart`, async () => {
          const logMark = hubLogSize();
          const marks = devices.map((d) => ({ wire: d.wire.length, connects: d.connects }));
          const stopped = await stopHub({ signal });
          assert.equal(stopped.status, signal === 'SIGTERM' ? 0 : 137, `exit status of iothubd ${stopped.pid}`);
          await startHub({ logLevel: 'debug' });

          // The SDK reconnects by itself (its retry policy); nothing here asks it to.
          await Promise.all(devices.map(async (d, i) => {
            const resumed = () => d.wire.slice(marks[i].wire).some((c) => c.connack && c.connack.returnCode === 0);
            await waitFor(() => resumed() && d.connects > marks[i].connects, 30000, `${d.deviceId} to reconnect`);
            await waitFor(async () => (await registry.get(d.deviceId)).responseBody.connectionState === 'Connected',
              10000, `${d.deviceId} connectionState Connected`);
          }));

          for (const d of devices) await assertDelivery(d, `${signal}-${d.deviceId}`);

          const log = hubLog(logMark);
          devices.forEach((d, i) => {
            const after = d.wire.slice(marks[i].wire);
            for (const connection of after.filter((c) => c.connack)) {
              assert.equal(connection.clean, false);
              assert.deepEqual(connection.connack, { sessionPresent: true, returnCode: 0 },
                `${d.deviceId}: CONNACK after the restart has session-present 1`);
            }
            assert.match(log, new RegExp(`device ${d.deviceId} connected from .* \\(session present: true\\)`));
            // What the SDK itself does after reconnecting: it may subscribe to methods again
            // (whether it does depends on how it noticed the drop: seen both ways after a
            // kill -9), never to desired updates or twin responses.
            const attempted = after.flatMap((c) => c.attempted);
            assert.ok(attempted.length === 0 || (attempted.length === 1 && attempted[0] === METHODS),
              `${d.deviceId}: the SDK resubscribes to methods at most: ${attempted}`);
          });
          // plain: the SUBSCRIBE the SDK sends (methods, if any) is the only one the hub gets.
          const sent = plain.wire.slice(marks[0].wire).flatMap((c) => c.sent);
          assert.ok(sent.every((f) => f === METHODS) && sent.length <= 1, `plain sent ${sent}`);
          assert.deepEqual(hubSubscribes(log, plain.deviceId), sent, 'the hub got only what the SDK sent');
          // withheld: no SUBSCRIBE at all after the restart, and (a) and (b) reached it anyway.
          assert.deepEqual(withheld.wire.slice(marks[1].wire).flatMap((c) => c.sent), []);
          assert.deepEqual(hubSubscribes(log, withheld.deviceId), [], 'the hub got no SUBSCRIBE after the restart');
        });
      }
    } finally {
      // A client left mid-reconnect by a failed assertion may never finish closing.
      for (const d of devices) {
        await Promise.race([d.client.close(), new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
      }
      // Leave a hub as run-suite started it (its log level) for the files that follow.
      const pid = hubPid();
      if (pid && processAlive(pid)) await stopHub();
      await startHub();
    }
  });
