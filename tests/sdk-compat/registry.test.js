// The official service SDK's Registry (npm azure-iothub 1.16.6), unmodified, against iothubd.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');

const connectionString = process.env.IOTHUB_CONNECTION_STRING;
const registry = Registry.fromConnectionString(connectionString);
const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

test('create generates keys, get returns the same device', async () => {
  const id = unique('reg');
  const created = (await registry.create({ deviceId: id })).responseBody;
  assert.equal(created.deviceId, id);
  assert.equal(created.status, 'enabled');
  assert.equal(created.connectionState, 'Disconnected');
  assert.equal(created.authentication.symmetricKey.primaryKey.length, 44);
  assert.equal(created.authentication.symmetricKey.secondaryKey.length, 44);
  const got = (await registry.get(id)).responseBody;
  assert.equal(got.authentication.symmetricKey.primaryKey, created.authentication.symmetricKey.primaryKey);
  assert.equal(got.etag, created.etag);
  await registry.delete(id);
});

test('supplied keys are stored verbatim', async () => {
  const id = unique('keys');
  const primaryKey = Buffer.alloc(32, 1).toString('base64');
  const secondaryKey = Buffer.alloc(32, 2).toString('base64');
  await registry.create({ deviceId: id, authentication: { symmetricKey: { primaryKey, secondaryKey } } });
  const got = (await registry.get(id)).responseBody;
  assert.equal(got.authentication.symmetricKey.primaryKey, primaryKey);
  assert.equal(got.authentication.symmetricKey.secondaryKey, secondaryKey);
  await registry.delete(id);
});

test('list includes created devices', async () => {
  const ids = [unique('list'), unique('list')];
  for (const id of ids) await registry.create({ deviceId: id });
  const list = (await registry.list()).responseBody;
  assert.ok(Array.isArray(list));
  for (const id of ids) assert.ok(list.some((d) => d.deviceId === id), `${id} listed`);
  for (const id of ids) await registry.delete(id);
});

test('update changes status and keeps keys; etag changes', async () => {
  const id = unique('upd');
  const created = (await registry.create({ deviceId: id })).responseBody;
  const updated = (await registry.update({ deviceId: id, status: 'disabled', statusReason: 'maintenance' })).responseBody;
  assert.equal(updated.status, 'disabled');
  assert.equal(updated.statusReason, 'maintenance');
  assert.notEqual(updated.etag, created.etag);
  assert.equal(updated.authentication.symmetricKey.primaryKey, created.authentication.symmetricKey.primaryKey);
  const got = (await registry.get(id)).responseBody;
  assert.equal(got.status, 'disabled');
  await registry.delete(id);
});

test('delete removes the device; unknown devices are DeviceNotFoundError', async () => {
  const id = unique('del');
  await registry.create({ deviceId: id });
  await registry.delete(id);
  await assert.rejects(registry.get(id), (err) => err.name === 'DeviceNotFoundError');
  await assert.rejects(registry.delete(id), (err) => err.name === 'DeviceNotFoundError');
});

test('create of an existing id is DeviceAlreadyExistsError; invalid ids are ArgumentError', async () => {
  const id = unique('dup');
  await registry.create({ deviceId: id });
  await assert.rejects(registry.create({ deviceId: id }), (err) => err.name === 'DeviceAlreadyExistsError');
  await assert.rejects(registry.create({ deviceId: 'invalid/name' }), (err) => err.name === 'ArgumentError');
  await registry.delete(id);
});

test('bulk add, update and remove', async () => {
  const ids = [unique('bulk'), unique('bulk'), unique('bulk')];
  const added = (await registry.addDevices(ids.map((deviceId) => ({ deviceId })))).responseBody;
  assert.equal(added.isSuccessful, true);
  assert.deepEqual(added.errors, []);
  const again = (await registry.addDevices([{ deviceId: ids[0] }])).responseBody;
  assert.equal(again.isSuccessful, false);
  assert.equal(again.errors[0].deviceId, ids[0]);
  const updated = (await registry.updateDevices(ids.map((deviceId) => ({ deviceId, status: 'disabled' })), true)).responseBody;
  assert.equal(updated.isSuccessful, true);
  assert.equal((await registry.get(ids[1])).responseBody.status, 'disabled');
  const removed = (await registry.removeDevices(ids.map((deviceId) => ({ deviceId })), true)).responseBody;
  assert.equal(removed.isSuccessful, true);
  await assert.rejects(registry.get(ids[2]), (err) => err.name === 'DeviceNotFoundError');
});

test('registry statistics count devices', async () => {
  const before = (await registry.getRegistryStatistics()).responseBody;
  const id = unique('stats');
  await registry.create({ deviceId: id, status: 'disabled' });
  const after = (await registry.getRegistryStatistics()).responseBody;
  assert.equal(after.totalDeviceCount, before.totalDeviceCount + 1);
  assert.equal(after.disabledDeviceCount, before.disabledDeviceCount + 1);
  await registry.delete(id);
});

test('a wrong key is UnauthorizedError', async () => {
  const bad = connectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${Buffer.alloc(32, 9).toString('base64')}`);
  await assert.rejects(Registry.fromConnectionString(bad).list(), (err) => err.name === 'UnauthorizedError');
});
