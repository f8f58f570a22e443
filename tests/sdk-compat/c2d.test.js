// Cloud-to-device (C2D) messages with the official SDKs, unmodified: the service sends with
// azure-iothub's Client (AMQP 1.0 over TLS on 5671, and AmqpWs on 443), devices receive over
// MQTT (azure-iot-device-mqtt: 'message' events, PUBACK completes) and over HTTP polling
// (azure-iot-device-http: GET /devices/{id}/messages/devicebound, complete/reject/abandon).
//
// What the SDKs do, and so what these tests expect (versions pinned in package-lock.json):
// - azure-iothub Amqp.send (dist/amqp.js) puts `to` = /devices/{encodeURIComponent(id)}/messages/devicebound
//   on each message sent over one sender link on /messages/devicebound; AmqpMessage.fromMessage
//   (dist/common-amqp/amqp_message.js) maps messageId/correlationId (a UUID-shaped id goes out as
//   an AMQP uuid), expiryTimeUtc to absolute-expiry-time (a number of ms: rhea cannot encode a
//   Date there), ack to the application property `iothub-ack`, properties to application
//   properties. A `rejected` outcome with a condition fails the send: amqp:not-found is
//   DeviceNotFoundError, amqp:resource-limit-exceeded is DeviceMaximumQueueDepthExceededError
//   (dist/amqp_service_errors.js); neither is retried (DefaultErrorFilter).
// - getFeedbackReceiver attaches a receiver on /messages/serviceBound/feedback (auto-accepted);
//   each message's body is a JSON array of feedback records.
// - the MQTT device SDK (Mqtt._onC2DMessage, dist/mqtt.js) splits the topic on '/' and takes the
//   5th segment as `k=v&k=v`, each side decodeURIComponent'ed: $.mid, $.cid, $.to, $.exp, ...
//   map to the message's fields, anything else is an application property. So the hub must
//   percent-encode '/', '&', '=', '%', spaces (as %20, not '+') and non-ASCII in keys and values.
// - the HTTP device SDK (azure-iot-device-http Http.receive) polls every second and drains;
//   azure-iot-http-base Http.toMessage maps iothub-messageid, iothub-correlationid, iothub-to,
//   iothub-expiry and the ETag (lockToken, quotes stripped); application properties stay as
//   their lower-cased header names `iothub-app-<key>`. The body reaches the app as a string.
//   It exposes no delivery count, so abandon is checked as "delivered again".
// - azure-iothub 1.16.6 has no public purge call: the purge goes through the REST client the
//   SDK itself generates and ships (dist/pl: cloudToDeviceMessages.purgeCloudToDeviceMessageQueue,
//   DELETE /devices/{id}/commands), as its IoTHubRegistryManager does.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Http } = require('azure-iot-device-http');
const { Client: ServiceClient, AmqpWs, IoTHubTokenCredentials } = require('azure-iothub');
const { IotHubGatewayServiceAPIs } = require('azure-iothub/dist/pl/iotHubGatewayServiceAPIs');
const {
  serviceConnectionString, hostName, registry, createDevice, unique, waitFor, hubPid, processAlive, stopHub, startHub,
} = require('./helpers');

const service = ServiceClient.fromConnectionString(serviceConnectionString);
const gateway = new IotHubGatewayServiceAPIs(new IoTHubTokenCredentials(serviceConnectionString), {
  baseUri: `https://${hostName}`, apiVersion: '2021-04-12',
});
const FEEDBACK_CONTENT_TYPE = 'application/vnd.microsoft.iothub.feedback.json';

// Every client a test opens, closed in after() at the latest (a test closes its own too).
const openClients = new Set();
async function closeQuietly(client) {
  openClients.delete(client);
  // A client stuck mid-reconnect may never finish closing: do not wait for it forever.
  await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000).unref())]);
}
test.after(async () => {
  for (const client of [...openClients]) await closeQuietly(client);
  await closeQuietly(service);
});

// Sends `body` to `deviceId` through `client` (default: the shared service client) with the
// given message fields; resolves once the hub accepted it.
async function send(deviceId, body, { messageId, correlationId, expiryTimeUtc, ack, properties = {} } = {},
  client = service) {
  const message = new Message(body);
  if (messageId !== undefined) message.messageId = messageId;
  if (correlationId !== undefined) message.correlationId = correlationId;
  if (expiryTimeUtc !== undefined) message.expiryTimeUtc = expiryTimeUtc;
  if (ack !== undefined) message.ack = ack;
  for (const [key, value] of Object.entries(properties)) message.properties.add(key, value);
  return client.send(deviceId, message);
}

// Opens a device client (MQTT by default) and listens for C2D messages: returns
// {client, messages, errors, close()}. `onMessage(msg, client)` runs for each message after it
// is recorded (HTTP: it must complete, reject or abandon it).
async function openReceiver(device, { transport = Mqtt, onMessage = null } = {}) {
  const client = DeviceClient.fromConnectionString(device.connectionString, transport);
  const receiver = { client, messages: [], errors: [], close: () => closeQuietly(client) };
  client.on('error', (err) => receiver.errors.push(err));
  await client.open();
  openClients.add(client);
  client.on('message', (msg) => {
    receiver.messages.push(msg);
    if (onMessage) {
      Promise.resolve().then(() => onMessage(msg, client)).catch((err) => receiver.errors.push(err));
    }
  });
  return receiver;
}

const ids = (messages) => messages.map((m) => m.messageId);
const count = (messages, messageId) => messages.filter((m) => m.messageId === messageId).length;

async function waitForMessages(receiver, messageIds, timeoutMs = 15000) {
  await waitFor(() => messageIds.every((id) => count(receiver.messages, id) > 0), timeoutMs,
    `C2D messages ${messageIds.join(', ')} (got ${ids(receiver.messages).join(', ') || 'none'}; `
    + `device client errors: ${receiver.errors.map((e) => e.message).join('; ') || 'none'})`);
}

// The device identity's cloudToDeviceMessageCount (a number in the JSON; the SDK's typing says string).
async function queuedCount(deviceId) {
  return Number((await registry.get(deviceId)).responseBody.cloudToDeviceMessageCount);
}
async function waitForQueuedCount(deviceId, expected, timeoutMs = 10000) {
  let last;
  await waitFor(async () => (last = await queuedCount(deviceId)) === expected, timeoutMs,
    `cloudToDeviceMessageCount ${expected} for ${deviceId} (last ${last})`);
}

// One feedback receiver for the whole file (feedback is hub-wide: a record may arrive in the
// batch of another test's message). Every batch is kept as {contentType, records}.
const feedbackBatches = [];
let feedbackReceiver = null;
async function startFeedback() {
  if (!feedbackReceiver) {
    feedbackReceiver = (async () => {
      const { result: receiver } = await service.getFeedbackReceiver();
      receiver.on('message', (msg) => {
        let records;
        try {
          records = JSON.parse(Buffer.from(msg.data).toString('utf8'));
        } catch (err) {
          records = { unparsable: String(msg.data), error: err.message };
        }
        feedbackBatches.push({ contentType: msg.contentType, records });
      });
      receiver.on('error', () => {});
      return receiver;
    })();
    feedbackReceiver.catch(() => { feedbackReceiver = null; });
  }
  return feedbackReceiver;
}
const feedbackRecords = () => feedbackBatches.flatMap((b) => (Array.isArray(b.records) ? b.records : []));
const feedbackFor = (messageId) => feedbackRecords().filter((r) => r.originalMessageId === messageId);
async function waitForFeedback(messageId, timeoutMs = 60000) {
  await startFeedback();
  await waitFor(() => feedbackFor(messageId).length > 0, timeoutMs,
    `feedback for ${messageId} (${feedbackBatches.length} batches so far: `
    + `${JSON.stringify(feedbackBatches).slice(0, 500)})`);
  return feedbackFor(messageId);
}
// Checks a feedback record's fields and the content type of the batch that carried it.
async function assertFeedbackRecord(record, { messageId, deviceId, statusCode }) {
  assert.equal(record.originalMessageId, messageId);
  assert.equal(record.statusCode, statusCode, JSON.stringify(record));
  assert.equal(record.deviceId, deviceId);
  assert.equal(typeof record.description, 'string', JSON.stringify(record));
  assert.ok(!Number.isNaN(Date.parse(record.enqueuedTimeUtc)), `enqueuedTimeUtc ${record.enqueuedTimeUtc}`);
  const identity = (await registry.get(deviceId)).responseBody;
  assert.equal(record.deviceGenerationId, identity.generationId);
  const batch = feedbackBatches.find((b) => Array.isArray(b.records) && b.records.includes(record));
  assert.equal(batch.contentType, FEEDBACK_CONTENT_TYPE);
}

test('C2D to a connected MQTT device: body bytes, ids, to, expiry and URL-encoded properties', { timeout: 60000 },
  async () => {
    const device = await createDevice('c2d-mqtt');
    const receiver = await openReceiver(device);
    try {
      const body = Buffer.concat([Buffer.from([0x00, 0xff, 0x7f, 0x80]), Buffer.from(' héllo / & = %', 'utf8')]);
      const expiry = Date.now() + 10 * 60 * 1000;
      const first = {
        messageId: unique('mid'), correlationId: 'cid/with spaces&more', expiryTimeUtc: expiry,
        properties: { 'a b': 'x/y&z', plain: 'value', 'ünï=%': 'ä=%2F+' },
      };
      await send(device.deviceId, body, first);
      // A UUID-shaped id goes out as an AMQP uuid (encodeUuid in amqp_message.js): the device
      // must still see the same text.
      const uuid = crypto.randomUUID();
      await send(device.deviceId, 'second', { messageId: uuid, correlationId: uuid });
      await waitForMessages(receiver, [first.messageId, uuid]);

      const got = receiver.messages.find((m) => m.messageId === first.messageId);
      assert.ok(Buffer.isBuffer(got.data), 'MQTT payload as a Buffer');
      assert.equal(Buffer.compare(got.data, body), 0, `body ${got.data.toString('hex')}`);
      assert.equal(got.correlationId, first.correlationId);
      assert.equal(String(got.to).toLowerCase(), `/devices/${device.deviceId}/messages/devicebound`.toLowerCase());
      assert.ok(got.expiryTimeUtc, 'expiryTimeUtc ($.exp) delivered');
      const parsedExpiry = Date.parse(got.expiryTimeUtc);
      assert.ok(Math.abs(parsedExpiry - expiry) < 1000,
        `$.exp ${got.expiryTimeUtc} for ${new Date(expiry).toISOString()}`);
      for (const [key, value] of Object.entries(first.properties)) {
        assert.equal(got.properties.getValue(key), value, `property ${key}`);
      }

      const second = receiver.messages.find((m) => m.messageId === uuid);
      assert.equal(second.data.toString('utf8'), 'second');
      assert.equal(second.correlationId, uuid);
      // The PUBACKs completed both: the queue is empty.
      await waitForQueuedCount(device.deviceId, 0);
      assert.deepEqual(receiver.errors, []);
    } finally {
      await receiver.close();
    }
  });

test('C2D over HTTP polling: complete, reject (gone, feedback Rejected) and abandon (delivered again)',
  { timeout: 120000 }, async () => {
    const device = await createDevice('c2d-http');
    const tag = unique('http');
    const completeId = `${tag}-complete`;
    const rejectId = `${tag}-reject`;
    const abandonId = `${tag}-abandon`;
    const markerId = `${tag}-marker`;
    const outcomes = [];
    // Set before the abandon is sent: the SDK polls again while this handler awaits, and an
    // abandoned message is at once deliverable, so its second delivery may arrive before the
    // abandon's promise resolves.
    let abandoned = false;
    const receiver = await openReceiver(device, {
      transport: Http,
      onMessage: async (msg, client) => {
        if (msg.messageId === rejectId) {
          await client.reject(msg);
          outcomes.push(['reject', msg.messageId]);
        } else if (msg.messageId === abandonId && !abandoned) {
          abandoned = true;
          await client.abandon(msg);
          outcomes.push(['abandon', msg.messageId]);
        } else {
          await client.complete(msg);
          outcomes.push(['complete', msg.messageId]);
        }
      },
    });
    try {
      const expiry = Date.now() + 10 * 60 * 1000;
      await send(device.deviceId, JSON.stringify({ text: 'héllo' }), {
        messageId: completeId, correlationId: 'corr-1', expiryTimeUtc: expiry, properties: { color: 'x/y&z', n: '1' },
      });
      await send(device.deviceId, 'reject me', { messageId: rejectId, ack: 'full' });
      await send(device.deviceId, 'abandon me', { messageId: abandonId });
      await waitFor(() => outcomes.some(([o, id]) => o === 'complete' && id === abandonId), 30000,
        `the abandoned message delivered again and completed (outcomes ${JSON.stringify(outcomes)}, errors `
        + `${receiver.errors.map((e) => e.message).join('; ') || 'none'})`);
      await send(device.deviceId, 'marker', { messageId: markerId });
      await waitFor(() => outcomes.some(([o, id]) => o === 'complete' && id === markerId), 30000,
        `the marker completed (outcomes ${JSON.stringify(outcomes)})`);

      const got = receiver.messages.find((m) => m.messageId === completeId);
      assert.equal(got.data.toString(), JSON.stringify({ text: 'héllo' }));
      assert.equal(got.correlationId, 'corr-1');
      assert.equal(String(got.to).toLowerCase(), `/devices/${device.deviceId}/messages/devicebound`.toLowerCase());
      assert.ok(got.lockToken, 'ETag gives the lock token');
      assert.ok(Math.abs(Date.parse(got.expiryTimeUtc) - expiry) < 1000, `iothub-expiry ${got.expiryTimeUtc}`);
      assert.equal(got.properties.getValue('iothub-app-color'), 'x/y&z');
      assert.equal(got.properties.getValue('iothub-app-n'), '1');
      assert.equal(count(receiver.messages, completeId), 1);
      assert.equal(count(receiver.messages, rejectId), 1, 'a rejected message is not delivered again');
      assert.equal(count(receiver.messages, abandonId), 2, 'an abandoned message is delivered again');
      const abandonLocks = receiver.messages.filter((m) => m.messageId === abandonId).map((m) => m.lockToken);
      assert.notEqual(abandonLocks[0], abandonLocks[1], 'each delivery has its own lock token');
      await waitForQueuedCount(device.deviceId, 0);
      assert.deepEqual(receiver.errors, []);

      const [record] = await waitForFeedback(rejectId);
      await assertFeedbackRecord(record, { messageId: rejectId, deviceId: device.deviceId, statusCode: 'Rejected' });
    } finally {
      await receiver.close();
    }
  });

test('a message abandoned at every delivery is dead-lettered after 10 deliveries: feedback DeliveryCountExceeded',
  { timeout: 120000 }, async () => {
    await startFeedback();
    const device = await createDevice('c2d-deadletter');
    const messageId = unique('dead');
    const receiver = await openReceiver(device, {
      transport: Http,
      onMessage: (msg, client) => (msg.messageId === messageId ? client.abandon(msg) : client.complete(msg)),
    });
    try {
      await send(device.deviceId, 'never wanted', { messageId, ack: 'negative' });
      const [record] = await waitForFeedback(messageId, 90000);
      await assertFeedbackRecord(record, { messageId, deviceId: device.deviceId, statusCode: 'DeliveryCountExceeded' });
      // Azure's default maximum delivery count for C2D messages is 10.
      assert.equal(count(receiver.messages, messageId), 10, `deliveries: ${count(receiver.messages, messageId)}`);
      await waitForQueuedCount(device.deviceId, 0);
    } finally {
      await receiver.close();
    }
  });

test('a message sent to an offline MQTT device arrives when it connects', { timeout: 60000 }, async () => {
  const device = await createDevice('c2d-offline');
  const messageId = unique('offline');
  await send(device.deviceId, 'waited for you', { messageId, properties: { k: 'v' } });
  await waitForQueuedCount(device.deviceId, 1);
  const receiver = await openReceiver(device);
  try {
    await waitForMessages(receiver, [messageId]);
    const got = receiver.messages.find((m) => m.messageId === messageId);
    assert.equal(got.data.toString(), 'waited for you');
    assert.equal(got.properties.getValue('k'), 'v');
    await waitForQueuedCount(device.deviceId, 0);
  } finally {
    await receiver.close();
  }
});

test('feedback: ack full on a completed message gives Success; positive and negative only their outcomes',
  { timeout: 120000 }, async () => {
    await startFeedback();
    const device = await createDevice('c2d-feedback');
    const receiver = await openReceiver(device);
    try {
      const tag = unique('fb');
      // negative on a completed message: no record. Completed first, then a `full` one, whose
      // Success record then comes after any (wrong) record of the first.
      const negativeId = `${tag}-negative`;
      await send(device.deviceId, 'n', { messageId: negativeId, ack: 'negative' });
      await waitForMessages(receiver, [negativeId]);
      await waitForQueuedCount(device.deviceId, 0);
      const fullId = `${tag}-full`;
      const positiveId = `${tag}-positive`;
      await send(device.deviceId, 'f', { messageId: fullId, ack: 'full' });
      await send(device.deviceId, 'p', { messageId: positiveId, ack: 'positive' });
      await waitForMessages(receiver, [fullId, positiveId]);

      const [full] = await waitForFeedback(fullId);
      await assertFeedbackRecord(full, { messageId: fullId, deviceId: device.deviceId, statusCode: 'Success' });
      const [positive] = await waitForFeedback(positiveId);
      await assertFeedbackRecord(positive, { messageId: positiveId, deviceId: device.deviceId, statusCode: 'Success' });
      assert.deepEqual(feedbackFor(negativeId), [], 'ack negative: no record for a completed message');
      assert.equal(feedbackFor(fullId).length, 1, 'one record per message');
    } finally {
      await receiver.close();
    }
  });

test('feedback: a message that expires while its device is offline gives Expired (negative and full, not positive)',
  { timeout: 120000 }, async () => {
    await startFeedback();
    const device = await createDevice('c2d-expired');
    const tag = unique('exp');
    const now = Date.now();
    // positive expires first: by the time the later ones' records came, a (wrong) record of it
    // would have been made.
    const positiveId = `${tag}-positive`;
    const negativeId = `${tag}-negative`;
    const fullId = `${tag}-full`;
    await send(device.deviceId, 'p', { messageId: positiveId, ack: 'positive', expiryTimeUtc: now + 2000 });
    await send(device.deviceId, 'n', { messageId: negativeId, ack: 'negative', expiryTimeUtc: now + 3000 });
    await send(device.deviceId, 'f', { messageId: fullId, ack: 'full', expiryTimeUtc: now + 3000 });
    const [full] = await waitForFeedback(fullId, 60000);
    await assertFeedbackRecord(full, { messageId: fullId, deviceId: device.deviceId, statusCode: 'Expired' });
    const [negative] = await waitForFeedback(negativeId, 60000);
    await assertFeedbackRecord(negative, { messageId: negativeId, deviceId: device.deviceId, statusCode: 'Expired' });
    assert.deepEqual(feedbackFor(positiveId), [], 'ack positive: no record for an expired message');
    await waitForQueuedCount(device.deviceId, 0);
  });

test('an expired message is never delivered to a device that connects after the expiry', { timeout: 60000 },
  async () => {
    const device = await createDevice('c2d-ttl');
    const tag = unique('ttl');
    const expiry = Date.now() + 1500;
    await send(device.deviceId, 'too late', { messageId: `${tag}-expired`, expiryTimeUtc: expiry });
    await send(device.deviceId, 'in time', { messageId: `${tag}-kept`, expiryTimeUtc: Date.now() + 10 * 60 * 1000 });
    await waitFor(() => Date.now() > expiry + 500, 5000, 'the first message\'s expiry to pass');
    const receiver = await openReceiver(device);
    try {
      // Queued behind the expired one: once these arrived, the expired one would have come first.
      await send(device.deviceId, 'marker', { messageId: `${tag}-marker` });
      await waitForMessages(receiver, [`${tag}-kept`, `${tag}-marker`]);
      assert.equal(count(receiver.messages, `${tag}-expired`), 0, `delivered: ${ids(receiver.messages)}`);
      await waitForQueuedCount(device.deviceId, 0);
    } finally {
      await receiver.close();
    }
  });

test('at most 50 messages wait per device; the 51st is DeviceMaximumQueueDepthExceededError', { timeout: 60000 },
  async () => {
    const device = await createDevice('c2d-full');
    for (let i = 0; i < 50; i++) await send(device.deviceId, `m${i}`, { messageId: `m${i}` });
    await waitForQueuedCount(device.deviceId, 50);
    await assert.rejects(send(device.deviceId, 'one too many', { messageId: 'm50' }), (err) => {
      assert.equal(err.constructor.name, 'DeviceMaximumQueueDepthExceededError',
        `${err.constructor.name}: ${err.message}`);
      assert.equal(err.amqpError && err.amqpError.condition, 'amqp:resource-limit-exceeded');
      return true;
    });
    assert.equal(await queuedCount(device.deviceId), 50);
    // Another device's queue is its own.
    const other = await createDevice('c2d-notfull');
    await send(other.deviceId, 'fine', { messageId: 'fine' });
    // Once the device takes a message, there is room again.
    const receiver = await openReceiver(device);
    try {
      await waitForMessages(receiver, ['m0']);
      await waitFor(async () => (await queuedCount(device.deviceId)) < 50, 10000, 'the queue to shrink');
      await send(device.deviceId, 'room again', { messageId: 'm50' });
    } finally {
      await receiver.close();
    }
  });

test('a message to an unknown device is DeviceNotFoundError, and the client keeps sending', { timeout: 60000 },
  async () => {
    await assert.rejects(send(unique('no-such-device'), 'nobody', { messageId: 'x' }), (err) => {
      assert.equal(err.constructor.name, 'DeviceNotFoundError', `${err.constructor.name}: ${err.message}`);
      assert.equal(err.amqpError && err.amqpError.condition, 'amqp:not-found');
      return true;
    });
    const device = await createDevice('c2d-after-404');
    await send(device.deviceId, 'still fine', { messageId: 'ok' });
    await waitForQueuedCount(device.deviceId, 1);
  });

test('cloudToDeviceMessageCount counts the queued messages', { timeout: 60000 }, async () => {
  const device = await createDevice('c2d-count');
  assert.equal(await queuedCount(device.deviceId), 0);
  const tag = unique('count');
  for (let i = 0; i < 3; i++) {
    await send(device.deviceId, `m${i}`, { messageId: `${tag}-${i}` });
    await waitForQueuedCount(device.deviceId, i + 1);
  }
  const receiver = await openReceiver(device);
  try {
    await waitForMessages(receiver, [0, 1, 2].map((i) => `${tag}-${i}`));
    await waitForQueuedCount(device.deviceId, 0);
  } finally {
    await receiver.close();
  }
});

test('purge (DELETE /devices/{id}/commands via the SDK\'s REST client) empties the queue', { timeout: 60000 },
  async () => {
    const device = await createDevice('c2d-purge');
    const tag = unique('purge');
    await startFeedback();
    for (let i = 0; i < 3; i++) {
      // The hub's choice where Azure's documentation is silent (docs/c2d.md §4, decisions §77):
      // purged messages give Purged feedback for negative and full acks.
      await send(device.deviceId, `m${i}`, { messageId: `${tag}-${i}`, ack: ['full', 'negative', 'positive'][i] });
    }
    await waitForQueuedCount(device.deviceId, 3);
    const purged = await gateway.cloudToDeviceMessages.purgeCloudToDeviceMessageQueue(device.deviceId);
    assert.equal(purged._response.status, 200);
    assert.equal(purged.totalMessagesPurged, 3);
    assert.equal(purged.deviceId, device.deviceId);
    await waitForQueuedCount(device.deviceId, 0);
    const receiver = await openReceiver(device);
    try {
      await send(device.deviceId, 'marker', { messageId: `${tag}-marker` });
      await waitForMessages(receiver, [`${tag}-marker`]);
      assert.deepEqual(ids(receiver.messages), [`${tag}-marker`]);
    } finally {
      await receiver.close();
    }
    for (const i of [0, 1]) {
      const [record] = await waitForFeedback(`${tag}-${i}`);
      await assertFeedbackRecord(record, { messageId: `${tag}-${i}`, deviceId: device.deviceId, statusCode: 'Purged' });
    }
    assert.deepEqual(feedbackFor(`${tag}-2`), [], 'ack positive: no record for a purged message');
    // Unknown device: 404 DeviceNotFound.
    await assert.rejects(gateway.cloudToDeviceMessages.purgeCloudToDeviceMessageQueue(unique('no-such-device')),
      (err) => err.statusCode === 404);
  });

test('the AmqpWs transport (AMQP over WebSocket on 443) sends to an MQTT device', { timeout: 60000 }, async () => {
  const wsService = ServiceClient.fromConnectionString(serviceConnectionString, AmqpWs);
  // Fail fast with the real error instead of retrying for four minutes.
  wsService.setRetryPolicy({ shouldRetry: () => false, nextRetryTimeout: () => 0 });
  const device = await createDevice('c2d-ws');
  const receiver = await openReceiver(device);
  try {
    const messageId = unique('ws');
    await send(device.deviceId, 'over websocket', { messageId, properties: { via: 'ws' } }, wsService);
    await waitForMessages(receiver, [messageId]);
    const got = receiver.messages.find((m) => m.messageId === messageId);
    assert.equal(got.data.toString(), 'over websocket');
    assert.equal(got.properties.getValue('via'), 'ws');
  } finally {
    await receiver.close();
    await closeQuietly(wsService);
  }
});

// Resolves like `promise`, or rejects once `ms` passed first (naming `what`).
function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// Leaves a hub running for the files that follow (after a test that stops it).
async function ensureHubRunning() {
  const pid = hubPid();
  if (!pid || !processAlive(pid)) await startHub();
}

// Last: restarting the hub drops every AMQP connection (the feedback receiver of the shared
// client is not re-attached).
// run-suite --cluster cannot restart its nodes (no IOTHUBD_START): these two apply to one hub.
const restartable = process.env.IOTHUBD_START ? false : 'the cluster suite does not restart nodes';

test('queued messages survive hub restarts (SIGTERM and kill -9) and reach the device afterwards',
  { timeout: 120000, skip: restartable }, async () => {
    const device = await createDevice('c2d-restart');
    const tag = unique('restart');
    // One service client per hub, closed before the hub stops: this test is about the queue,
    // the next one about a client that lives through a restart.
    const sendOnce = async (body, fields) => {
      const client = ServiceClient.fromConnectionString(serviceConnectionString);
      openClients.add(client);
      try {
        await send(device.deviceId, body, fields, client);
      } finally {
        await closeQuietly(client);
      }
    };
    try {
      await sendOnce('before SIGTERM', { messageId: `${tag}-term`, properties: { n: '1' } });
      await waitForQueuedCount(device.deviceId, 1);
      const stopped = await stopHub();
      assert.equal(stopped.status, 0, `iothubd ${stopped.pid} exit status on SIGTERM`);
      await startHub();
      await waitForQueuedCount(device.deviceId, 1);

      // An accepted send is durable: kill -9 right after the send resolved.
      await sendOnce('before kill -9', { messageId: `${tag}-kill` });
      const killed = await stopHub({ signal: 'SIGKILL' });
      assert.equal(killed.status, 137);
      await startHub();
      await waitForQueuedCount(device.deviceId, 2);

      const receiver = await openReceiver(device);
      try {
        await waitForMessages(receiver, [`${tag}-term`, `${tag}-kill`]);
        const first = receiver.messages.find((m) => m.messageId === `${tag}-term`);
        assert.equal(first.data.toString(), 'before SIGTERM');
        assert.equal(first.properties.getValue('n'), '1');
        assert.equal(receiver.messages.find((m) => m.messageId === `${tag}-kill`).data.toString(), 'before kill -9');
        await waitForQueuedCount(device.deviceId, 0);
      } finally {
        await receiver.close();
      }
    } finally {
      await ensureHubRunning();
    }
  });

// azure-iothub's Amqp transport reconnects on the next send once its connection is gone
// (dist/amqp.js: 'disconnected' state, send -> connect). How fast it notices depends on how
// the connection ended: a dropped socket is noticed at once; a peer's Close that arrives while
// the client's session and links are still open makes its rundown (dist/common-amqp/amqp.js,
// 'disconnecting' state) wait for detach replies that never come, up to its 45 s timer, and a
// send made meanwhile goes out on the dead link and fails after those 45 s.
test('the service client sends again right after the hub restarts (SIGTERM, kill -9)',
  { timeout: 120000, skip: restartable },
  async () => {
    const device = await createDevice('c2d-client-restart');
    const tag = unique('client');
    const client = ServiceClient.fromConnectionString(serviceConnectionString);
    openClients.add(client);
    try {
      await send(device.deviceId, 'first', { messageId: `${tag}-0` }, client);
      for (const signal of ['SIGTERM', 'SIGKILL']) {
        await stopHub({ signal });
        await startHub();
        await withDeadline(send(device.deviceId, `after ${signal}`, { messageId: `${tag}-${signal}` }, client),
          15000, `send on the same client after a ${signal} restart`);
      }
      await waitForQueuedCount(device.deviceId, 3);
    } finally {
      await closeQuietly(client);
      await ensureHubRunning();
    }
  });
