// Telemetry read through the Event Hubs-compatible endpoint with the official
// @azure/event-hubs EventHubConsumerClient, unmodified (docs/event-hubs.md): devices send
// over MQTT (azure-iot-device-mqtt) and HTTP (azure-iot-device-http), the consumer reads by
// partition, from an offset, a sequence number and an enqueued time, in two consumer groups,
// and across a hub restart.
//
// What the SDK does, and so what these tests expect (version pinned in package-lock.json):
// - EventHubConsumerClient(group, connectionString) connects to sb://HOST (port 5671) with SASL
//   ANONYMOUS, puts a token signed with the key's text (not base64-decoded) on $cbs for each
//   link, asks $management for the hub's and partitions' properties, and attaches one receiver
//   per partition on ENTITY/ConsumerGroups/GROUP/Partitions/N with a selector filter naming
//   its start position (`amqp.annotation.x-opt-offset > '41'` ...).
// - ReceivedEventData: body (JSON-parsed when it parses), properties (application
//   properties), systemProperties (the other message annotations, e.g.
//   iothub-connection-device-id, and message properties such as messageId), sequenceNumber,
//   offset (a string), enqueuedTimeUtc (a Date).
// - a receiver detached with amqp:link:stolen (a higher ownerLevel took over) reports a
//   ReceiverDisconnectedError to processError; an unknown consumer group a
//   MessagingEntityNotFoundError (not retried).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { EventHubConsumerClient, earliestEventPosition, latestEventPosition } = require('@azure/event-hubs');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { Http } = require('azure-iot-device-http');
const {
  serviceConnectionString, hostName, createDevice, unique, waitFor, serviceRequest, stopHub, startHub,
} = require('./helpers');

// The endpoint's connection string: run-suite exports what `iothubd connection-string
// --event-hubs` prints; the cluster suite builds the same from the service string.
const field = (name) => new RegExp(`${name}=([^;]+)`).exec(serviceConnectionString)[1];
const entity = hostName.split('.')[0];
const eventHubsConnectionString = process.env.IOTHUB_EVENTHUBS_CONNECTION_STRING
  || `Endpoint=sb://${hostName}/;SharedAccessKeyName=${field('SharedAccessKeyName')};`
    + `SharedAccessKey=${field('SharedAccessKey')};EntityPath=${entity}`;
const PARTITIONS = 4;  // iothubd's default --telemetry-partitions
const canRestart = Boolean(process.env.IOTHUBD_START);

// The partition of a device's messages: FNV-1a (32 bits) of its id modulo the partition
// count (docs/telemetry.md §1).
function partitionOf(deviceId) {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(deviceId, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return String(hash % PARTITIONS);
}

const openClients = new Set();
function consumer(group = '$Default') {
  const client = new EventHubConsumerClient(group, eventHubsConnectionString);
  openClients.add(client);
  return client;
}
async function closeQuietly(client) {
  openClients.delete(client);
  await Promise.race([client.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000).unref())]);
}
test.after(async () => {
  for (const client of [...openClients]) await closeQuietly(client);
});

// Subscribes to one partition and collects events (and errors) until closed.
function collect(client, partitionId, options = {}) {
  const seen = { events: [], errors: [] };
  seen.subscription = client.subscribe(partitionId, {
    processEvents: async (events) => { seen.events.push(...events); },
    processError: async (err) => { seen.errors.push(err); },
  }, { maxBatchSize: 50, maxWaitTimeInSeconds: 1, ...options });
  return seen;
}

// The events of `deviceId` in `seen`, in order.
const of = (seen, deviceId) => seen.events.filter((e) => e.systemProperties['iothub-connection-device-id'] === deviceId);

async function mqttDevice(prefix) {
  const device = await createDevice(prefix);
  const client = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
  await client.open();
  device.client = client;
  return device;
}

function telemetry(body, { messageId, properties = {}, contentType } = {}) {
  const message = new Message(typeof body === 'string' ? body : JSON.stringify(body));
  if (messageId) message.messageId = messageId;
  if (contentType) {
    message.contentType = contentType;
    message.contentEncoding = 'utf-8';
  }
  for (const [k, v] of Object.entries(properties)) message.properties.add(k, v);
  return message;
}

// Sends `count` numbered messages from an MQTT device; each resolves on PUBACK.
async function sendNumbered(device, count, from = 0) {
  for (let i = from; i < from + count; ++i) {
    await device.client.sendEvent(telemetry({ n: i }, { messageId: `${device.deviceId}-${i}` }));
  }
}

test('the management node describes the hub and its partitions', async () => {
  const client = consumer();
  const hub = await client.getEventHubProperties();
  assert.equal(hub.name, entity);
  assert.deepEqual(hub.partitionIds, ['0', '1', '2', '3']);
  assert.ok(hub.createdOn instanceof Date && hub.createdOn.getTime() > 0);
  assert.deepEqual(await client.getPartitionIds(), ['0', '1', '2', '3']);

  const device = await mqttDevice('eh-props');
  const partition = partitionOf(device.deviceId);
  const before = await client.getPartitionProperties(partition);
  assert.equal(before.partitionId, partition);
  assert.equal(before.eventHubName, entity);
  await sendNumbered(device, 2);
  const after = await client.getPartitionProperties(partition);
  assert.equal(after.isEmpty, false);
  assert.equal(after.lastEnqueuedSequenceNumber, before.lastEnqueuedSequenceNumber + 2);
  assert.equal(after.lastEnqueuedOffset, String(after.lastEnqueuedSequenceNumber));
  assert.ok(after.lastEnqueuedOnUtc.getTime() >= Date.now() - 60_000);
  assert.ok(after.beginningSequenceNumber <= after.lastEnqueuedSequenceNumber);
  await device.client.close();
  await closeQuietly(client);
});

test('MQTT telemetry arrives on its partition with body, properties and IoT Hub stamps', async () => {
  const device = await mqttDevice('eh-mqtt');
  const partition = partitionOf(device.deviceId);
  const client = consumer();
  const seen = collect(client, partition, { startPosition: latestEventPosition });
  await new Promise((r) => setTimeout(r, 500));  // let the receiver attach at the latest position
  await device.client.sendEvent(telemetry({ temperature: 21.5 }, {
    messageId: 'm-1', properties: { alert: 'false', 'unit/x': 'c&f' }, contentType: 'application/json',
  }));
  await waitFor(() => of(seen, device.deviceId).length >= 1, 15000, 'the MQTT event');
  const [event] = of(seen, device.deviceId);
  assert.deepEqual(event.body, { temperature: 21.5 });
  assert.equal(event.messageId, 'm-1');
  assert.equal(event.contentType, 'application/json');
  assert.deepEqual(event.properties, { alert: 'false', 'unit/x': 'c&f' });
  assert.equal(event.systemProperties['iothub-connection-device-id'], device.deviceId);
  assert.equal(event.systemProperties['iothub-message-source'], 'Telemetry');
  assert.match(event.systemProperties['iothub-connection-auth-method'], /"type":"sas"/);
  assert.ok(event.systemProperties['iothub-connection-auth-generation-id']);
  assert.equal(typeof event.systemProperties['iothub-enqueuedtime'], 'number');
  assert.equal(typeof event.sequenceNumber, 'number');
  assert.equal(event.offset, String(event.sequenceNumber));
  assert.ok(Math.abs(event.enqueuedTimeUtc.getTime() - Date.now()) < 60_000);
  assert.deepEqual(seen.errors, []);
  await seen.subscription.close();
  await device.client.close();
  await closeQuietly(client);
});

test('telemetry over MQTT over WebSocket (MqttWs, port 443) is readable too', async () => {
  const device = await createDevice('eh-ws');
  const ws = DeviceClient.fromConnectionString(device.connectionString, MqttWs);
  await ws.open();
  const client = consumer();
  const seen = collect(client, partitionOf(device.deviceId), { startPosition: latestEventPosition });
  await new Promise((r) => setTimeout(r, 500));
  await ws.sendEvent(telemetry({ via: 'websocket' }, { messageId: 'w-1' }));
  await waitFor(() => of(seen, device.deviceId).length >= 1, 15000, 'the MqttWs event');
  const [event] = of(seen, device.deviceId);
  assert.deepEqual(event.body, { via: 'websocket' });
  assert.equal(event.messageId, 'w-1');
  await seen.subscription.close();
  await ws.close();
  await closeQuietly(client);
});

test('HTTP telemetry, single and batched, is readable too', async () => {
  const device = await createDevice('eh-http');
  const http = DeviceClient.fromConnectionString(device.connectionString, Http);
  await http.open();
  const client = consumer();
  const seen = collect(client, partitionOf(device.deviceId), { startPosition: latestEventPosition });
  await new Promise((r) => setTimeout(r, 500));
  await http.sendEvent(telemetry('plain text', { messageId: 'h-1', properties: { via: 'http' } }));
  await http.sendEventBatch([telemetry({ b: 1 }), telemetry({ b: 2 })]);
  await waitFor(() => of(seen, device.deviceId).length >= 3, 15000, 'three HTTP events');
  const events = of(seen, device.deviceId);
  assert.equal(Buffer.from(events[0].body).toString('utf8'), 'plain text');  // not JSON: a Buffer
  assert.equal(events[0].messageId, 'h-1');
  assert.equal(events[0].properties.via, 'http');
  assert.deepEqual(events.slice(1).map((e) => e.body), [{ b: 1 }, { b: 2 }]);
  assert.equal(events[2].sequenceNumber, events[1].sequenceNumber + 1);
  await seen.subscription.close();
  await http.close();
  await closeQuietly(client);
});

test('reading from an offset, a sequence number and an enqueued time', async () => {
  const device = await mqttDevice('eh-pos');
  const partition = partitionOf(device.deviceId);
  await sendNumbered(device, 3);
  await new Promise((r) => setTimeout(r, 20));
  const middle = new Date();
  await new Promise((r) => setTimeout(r, 20));
  await sendNumbered(device, 3, 3);
  const client = consumer();

  const all = collect(client, partition, { startPosition: earliestEventPosition });
  await waitFor(() => of(all, device.deviceId).length >= 6, 15000, 'all six events from the start');
  await all.subscription.close();
  const mine = of(all, device.deviceId);
  assert.deepEqual(mine.map((e) => e.body.n), [0, 1, 2, 3, 4, 5]);

  const numbers = async (startPosition, count) => {
    const seen = collect(client, partition, { startPosition });
    await waitFor(() => of(seen, device.deviceId).length >= count, 15000, JSON.stringify(startPosition));
    await seen.subscription.close();
    return of(seen, device.deviceId).map((e) => e.body.n);
  };
  assert.deepEqual(await numbers({ offset: mine[1].offset }, 4), [2, 3, 4, 5]);
  assert.deepEqual(await numbers({ offset: mine[1].offset, isInclusive: true }, 5), [1, 2, 3, 4, 5]);
  assert.deepEqual(await numbers({ sequenceNumber: mine[3].sequenceNumber }, 2), [4, 5]);
  assert.deepEqual(await numbers({ sequenceNumber: mine[3].sequenceNumber, isInclusive: true }, 3), [3, 4, 5]);
  assert.deepEqual(await numbers({ enqueuedOn: middle }, 3), [3, 4, 5]);
  await device.client.close();
  await closeQuietly(client);
});

test('two consumer groups each read every event; an unknown group is refused', async () => {
  const group = unique('cg').replace(/-/g, '_');
  const created = await serviceRequest('PUT', `/eventHubEndpoint/consumerGroups/${group}`);
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const device = await mqttDevice('eh-groups');
  const partition = partitionOf(device.deviceId);
  const first = consumer('$Default');
  const second = consumer(group.toUpperCase());  // names compare ignoring case
  const a = collect(first, partition, { startPosition: latestEventPosition });
  const b = collect(second, partition, { startPosition: latestEventPosition });
  await new Promise((r) => setTimeout(r, 500));
  await sendNumbered(device, 3);
  await waitFor(() => of(a, device.deviceId).length >= 3 && of(b, device.deviceId).length >= 3, 15000,
    'both groups to read three events');
  assert.deepEqual(of(a, device.deviceId).map((e) => e.body.n), [0, 1, 2]);
  assert.deepEqual(of(b, device.deviceId).map((e) => e.body.n), [0, 1, 2]);
  await a.subscription.close();
  await b.subscription.close();

  const stranger = consumer('no-such-group');
  const refused = collect(stranger, partition, { startPosition: earliestEventPosition });
  await waitFor(() => refused.errors.length > 0, 15000, 'the unknown group to be refused');
  assert.equal(refused.errors[0].code, 'MessagingEntityNotFoundError', refused.errors[0].message);
  assert.equal(refused.events.length, 0);
  await refused.subscription.close();
  await device.client.close();
  for (const c of [first, second, stranger]) await closeQuietly(c);
});

test('a receiver with a higher owner level takes the partition over', async () => {
  const device = await mqttDevice('eh-epoch');
  const partition = partitionOf(device.deviceId);
  const older = consumer();
  const newer = consumer();
  const low = collect(older, partition, { startPosition: latestEventPosition, ownerLevel: 1 });
  await new Promise((r) => setTimeout(r, 500));
  await sendNumbered(device, 1);
  await waitFor(() => of(low, device.deviceId).length >= 1, 15000, 'the first reader to read');
  const high = collect(newer, partition, { startPosition: latestEventPosition, ownerLevel: 2 });
  await waitFor(() => low.errors.length > 0, 15000, 'the first reader to be displaced');
  assert.equal(low.errors[0].code, 'ReceiverDisconnectedError', low.errors[0].message);
  await new Promise((r) => setTimeout(r, 500));
  await sendNumbered(device, 1, 1);
  await waitFor(() => of(high, device.deviceId).length >= 1, 15000, 'the new owner to read');
  assert.deepEqual(of(high, device.deviceId).map((e) => e.body.n), [1]);
  assert.deepEqual(high.errors, []);
  await low.subscription.close();
  await high.subscription.close();
  await device.client.close();
  await closeQuietly(older);
  await closeQuietly(newer);
});

test('after a hub restart nothing is lost and nothing is read twice past the checkpoint',
  { skip: canRestart ? false : 'the cluster suite does not restart nodes' }, async () => {
    const device = await mqttDevice('eh-restart');
    const partition = partitionOf(device.deviceId);
    await sendNumbered(device, 5);  // each PUBACKed: committed before the restart
    let client = consumer();
    const before = collect(client, partition, { startPosition: earliestEventPosition });
    await waitFor(() => of(before, device.deviceId).length >= 5, 15000, 'five events before the restart');
    await before.subscription.close();
    const checkpoint = of(before, device.deviceId)[2];  // processed up to n = 2
    await device.client.close();
    await closeQuietly(client);

    const stopped = await stopHub();
    assert.equal(stopped.status, 0);
    await startHub();

    const reconnected = DeviceClient.fromConnectionString(device.connectionString, Mqtt);
    await reconnected.open();
    await sendNumbered({ deviceId: device.deviceId, client: reconnected }, 2, 5);
    client = consumer();
    const after = collect(client, partition, { startPosition: { offset: checkpoint.offset } });
    await waitFor(() => of(after, device.deviceId).length >= 4, 20000, 'the events after the checkpoint');
    await new Promise((r) => setTimeout(r, 300));  // anything duplicated would show up now
    await after.subscription.close();
    const mine = of(after, device.deviceId);
    assert.deepEqual(mine.map((e) => e.body.n), [3, 4, 5, 6]);
    const sequences = mine.map((e) => e.sequenceNumber);
    assert.equal(new Set(sequences).size, sequences.length);
    await reconnected.close();
    await closeQuietly(client);
  });
