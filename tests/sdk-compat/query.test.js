// The official service SDK's query API (Registry.createQuery: next / nextAsTwin, npm
// azure-iothub 1.16.6), unmodified, against iothubd's POST /devices/query (docs/protocol.md
// §8, §9.8). Every test works on its own devices, selected by a fresh id prefix or tag.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const {
  registry, jobClient, unique, createFleet, deviceIdIn, reportFromDevice, waitForJob, readAllPages,
} = require('./helpers');

const ids = (rows) => rows.map((r) => r.deviceId).sort();
const twinQuery = (sql, pageSize) => readAllPages(registry.createQuery(sql, pageSize), { asTwin: true });
const rawQuery = (sql, pageSize) => readAllPages(registry.createQuery(sql, pageSize));

// Checks the paging contract of one fully read query: every page but the last carries a
// non-empty x-ms-continuation, the last one none (docs/protocol.md §8.7).
function assertPaging(pages, itemType) {
  pages.forEach((page, n) => {
    assert.equal(page.itemType, itemType, `x-ms-item-type of page ${n + 1}`);
    if (n < pages.length - 1) {
      assert.ok(typeof page.continuation === 'string' && page.continuation.length > 0, `continuation on page ${n + 1}`);
    } else {
      assert.equal(page.continuation, undefined, 'no x-ms-continuation header on the last page');
    }
  });
}

test('nextAsTwin pages 25 devices 4 at a time: each device once, no continuation on the last page', async () => {
  const { prefix, devices } = await createFleet('qpage', 25);
  const sql = `SELECT * FROM devices WHERE STARTSWITH(deviceId, '${prefix}')`;

  const query = registry.createQuery(sql, 4);
  const { rows, pages } = await readAllPages(query, { asTwin: true });
  assert.deepEqual(pages.map((p) => p.rows.length), [4, 4, 4, 4, 4, 4, 1]);
  assertPaging(pages, 'Twin');
  assert.equal(query.hasMoreResults, false);
  assert.deepEqual(ids(rows), ids(devices), 'every device exactly once');
  for (const twin of rows) {
    assert.equal(typeof twin.etag, 'string');
    assert.deepEqual(twin.tags, {});
    assert.equal(twin.properties.desired.$version, 1);
    assert.equal(twin.properties.reported.$version, 1);
    assert.equal(twin.status, 'enabled');
  }

  // A page size dividing the result: the last full page ends the paging (no empty extra page).
  const exact = await twinQuery(sql, 5);
  assert.deepEqual(exact.pages.map((p) => p.rows.length), [5, 5, 5, 5, 5]);
  assertPaging(exact.pages, 'Twin');

  // TOP n limits the total across pages (docs/protocol.md §8.6).
  const top = await twinQuery(`SELECT TOP 10 * FROM devices WHERE STARTSWITH(deviceId, '${prefix}')`, 4);
  assert.deepEqual(top.pages.map((p) => p.rows.length), [4, 4, 2]);
  assert.equal(new Set(ids(top.rows)).size, 10);

  // A continuation token is usable by another Query object with the same text.
  const first = registry.createQuery(sql, 10);
  const page1 = await first.nextAsTwin();
  const resumed = Object.assign(registry.createQuery(sql, 10), { continuationToken: first.continuationToken });
  const rest = await readAllPages(resumed, { asTwin: true });
  assert.deepEqual([...ids(page1.result), ...ids(rest.rows)].sort(), ids(devices));

  // No match: one empty page, no continuation.
  const none = await rawQuery(`SELECT * FROM devices WHERE deviceId = '${prefix}-none'`, 4);
  assert.deepEqual(none.rows, []);
  assert.equal(none.pages.length, 1);
  assertPaging(none.pages, 'Twin');
});

// Twelve devices with varied tags; devices 0..2 also report properties over MQTT.
const tagsOf = (fleet, i) => ({
  fleet,
  building: 40 + (i % 3),
  ...(i === 11 ? {} : { floor: i % 4 }),
  location: { region: i < 6 ? 'eu-west' : 'us-east' },
  model: i % 2 ? 'door' : 'lock',
});
const reportedOf = [
  { fw: { version: '1.2.0' }, temperature: 21.5 },
  { fw: { version: '2.0.1' }, temperature: 30 },
  { fw: { version: '2.0.1' }, temperature: 18, health: 'ok' },
];

// Returns {fleet (the tags.fleet value), devices, model: what each twin holds}.
async function queryFleet(name) {
  const fleet = unique(name);
  const { devices } = await createFleet(name, 12, (i) => ({ tags: tagsOf(fleet, i) }));
  await Promise.all(reportedOf.map((patch, i) => reportFromDevice(devices[i], patch)));
  const model = devices.map((d, i) => ({
    deviceId: d.deviceId, tags: tagsOf(fleet, i), reported: reportedOf[i] ?? {},
  }));
  return { fleet, devices, model };
}

test('WHERE: IN, NIN, IS_DEFINED, STARTSWITH, tags and reported properties select the right devices', async () => {
  const { fleet, devices, model } = await queryFleet('qwhere');
  await registry.update({ deviceId: devices[5].deviceId, status: 'disabled' });
  const inFleet = `tags.fleet = '${fleet}'`;
  const disabled = devices[5].deviceId;
  const idsPrefix = devices[10].deviceId.slice(0, -1);  // devices 10 and 11
  const cases = [
    [`${inFleet} AND tags.building IN [40, 42]`, (m) => [40, 42].includes(m.tags.building)],
    [`${inFleet} AND tags.building NIN [40, 42]`, (m) => ![40, 42].includes(m.tags.building)],
    [`${inFleet} AND IS_DEFINED(tags.floor)`, (m) => m.tags.floor !== undefined],
    [`${inFleet} AND NOT IS_DEFINED(tags.floor)`, (m) => m.tags.floor === undefined],
    [`${inFleet} AND STARTSWITH(tags.location.region, 'eu')`, (m) => m.tags.location.region.startsWith('eu')],
    [`${inFleet} AND tags.location.region IN ['us-east'] AND tags.building NIN [41]`,
      (m) => m.tags.location.region === 'us-east' && m.tags.building !== 41],
    [`${inFleet} AND tags.floor >= 2 AND tags.model = "door"`, (m) => m.tags.floor >= 2 && m.tags.model === 'door'],
    [`${inFleet} AND (tags.floor = 0 OR properties.reported.health = 'ok')`,
      (m) => m.tags.floor === 0 || m.reported.health === 'ok'],
    [`${inFleet} AND properties.reported.fw.version = '2.0.1'`, (m) => m.reported.fw?.version === '2.0.1'],
    [`${inFleet} AND properties.reported.temperature > 20`, (m) => m.reported.temperature > 20],
    [`${inFleet} AND IS_DEFINED(properties.reported.fw)`, (m) => m.reported.fw !== undefined],
    [`${inFleet} AND properties.reported.temperature != 30`,
      (m) => m.reported.temperature !== undefined && m.reported.temperature !== 30],
    [`${inFleet} AND status = 'disabled'`, (m) => m.deviceId === disabled],
    [`${inFleet} AND status = 'enabled' AND tags.building = 42`,
      (m) => m.deviceId !== disabled && m.tags.building === 42],
    [`deviceId IN ['${devices[3].deviceId}', '${devices[7].deviceId}', 'no-such-device']`,
      (m) => [devices[3].deviceId, devices[7].deviceId].includes(m.deviceId)],
    // Keywords and functions in lower/mixed case, as real client code writes them.
    [`startsWith(deviceId, '${idsPrefix}') and tags.building in [40, 41]`,
      (m) => m.deviceId.startsWith(idsPrefix) && [40, 41].includes(m.tags.building)],
  ];
  for (const [where, selects] of cases) {
    const { rows } = await twinQuery(`SELECT * FROM devices WHERE ${where}`, 5);
    assert.deepEqual(ids(rows), model.filter(selects).map((m) => m.deviceId).sort(), where);
  }
  // The rows are full twins carrying the reported values.
  const { rows } = await twinQuery(`SELECT * FROM devices WHERE ${inFleet} AND properties.reported.temperature = 21.5`);
  assert.equal(rows.length, 1);
  assert.deepEqual(rows[0].properties.reported.fw, { version: '1.2.0' });
  assert.equal(rows[0].tags.location.region, 'eu-west');
});

test('projections with next(): Raw rows keyed by leaf name or alias, paged', async () => {
  const { fleet, devices, model } = await queryFleet('qproj');
  const { rows, pages } = await rawQuery('SELECT deviceId, tags.building AS building, tags.location.region, '
    + `properties.reported.temperature AS t FROM devices WHERE tags.fleet = '${fleet}'`, 5);
  assert.deepEqual(pages.map((p) => p.rows.length), [5, 5, 2]);
  assertPaging(pages, 'Raw');
  assert.deepEqual(ids(rows), ids(devices));
  for (const row of rows) {
    const m = model.find((x) => x.deviceId === row.deviceId);
    assert.equal(row.building, m.tags.building, row.deviceId);
    assert.equal(row.region, m.tags.location.region, row.deviceId);
    assert.equal(row.t, m.reported.temperature, row.deviceId);
    // Undefined values are left out of projected rows (not null).
    const keys = ['building', 'deviceId', 'region', ...(m.reported.temperature === undefined ? [] : ['t'])];
    assert.deepEqual(Object.keys(row).sort(), keys, row.deviceId);
  }
  // Identity fields are matched case-insensitively and come back in their canonical case
  // (docs/protocol.md §8.2, §8.4: `SELECT DeviceId, LastActivityTime` returns deviceId,
  // lastActivityTime).
  const canonical = await rawQuery(
    `SELECT DeviceId, Status FROM devices WHERE tags.fleet = '${fleet}' AND tags.building = 40`);
  assert.deepEqual(canonical.rows.map((r) => Object.keys(r).sort()), canonical.rows.map(() => ['deviceId', 'status']));
  assert.deepEqual(ids(canonical.rows), model.filter((m) => m.tags.building === 40).map((m) => m.deviceId).sort());
});

test('COUNT() and GROUP BY return the right numbers', async () => {
  const { fleet, model } = await queryFleet('qcount');
  const inFleet = `tags.fleet = '${fleet}'`;
  const one = async (sql) => {
    const { result, message } = await registry.createQuery(sql).next();
    assert.equal(message.headers['x-ms-item-type'], 'Raw', sql);
    assert.equal(message.headers['x-ms-continuation'], undefined, sql);
    return result;
  };
  const count = (where) => one(`SELECT COUNT() AS n FROM devices WHERE ${where}`);
  assert.deepEqual(await count(inFleet), [{ n: 12 }]);
  assert.deepEqual(await count(`${inFleet} AND tags.building = 41 AND tags.model = 'door'`),
    [{ n: model.filter((m) => m.tags.building === 41 && m.tags.model === 'door').length }]);
  assert.deepEqual(await count(`${inFleet} AND IS_DEFINED(properties.reported.fw)`), [{ n: 3 }]);
  assert.deepEqual(await count(`tags.fleet = '${fleet}-nobody'`), [{ n: 0 }]);

  const sorted = (rows, key) => [...rows].sort((a, b) => String(a[key]).localeCompare(String(b[key])));
  const byBuilding = await one(
    `SELECT tags.building AS building, COUNT() AS n FROM devices WHERE ${inFleet} GROUP BY tags.building`);
  assert.deepEqual(sorted(byBuilding, 'building'), [
    { building: 40, n: 4 }, { building: 41, n: 4 }, { building: 42, n: 4 }]);

  const doorsByRegion = await one('SELECT tags.location.region AS region, COUNT() AS devices FROM devices '
    + `WHERE ${inFleet} AND tags.model = 'door' GROUP BY tags.location.region`);
  assert.deepEqual(sorted(doorsByRegion, 'region'),
    [{ region: 'eu-west', devices: 3 }, { region: 'us-east', devices: 3 }]);

  const byFirmware = await one('SELECT properties.reported.fw.version AS version, COUNT() AS n FROM devices '
    + `WHERE ${inFleet} AND IS_DEFINED(properties.reported.fw.version) GROUP BY properties.reported.fw.version`);
  assert.deepEqual(sorted(byFirmware, 'version'), [{ version: '1.2.0', n: 1 }, { version: '2.0.1', n: 2 }]);
});

test('devices.jobs rows after jobs finished: shape of docs/protocol.md §9.8, filters on jobId and status', async () => {
  const { devices } = await createFleet('qjobs', 4);
  const twinJob = unique('qjob-twin');
  const methodJob = unique('qjob-method');
  await jobClient.scheduleTwinUpdate(twinJob, deviceIdIn(devices.slice(0, 3)), { etag: '*', tags: { queried: true } });
  await jobClient.scheduleDeviceMethod(methodJob, deviceIdIn(devices.slice(2)),
    { methodName: 'reboot', payload: { now: true } });
  assert.equal((await waitForJob(twinJob)).job.status, 'completed');
  assert.equal((await waitForJob(methodJob)).job.status, 'completed');
  const jobsWhere = (where, pageSize) => rawQuery(`SELECT * FROM devices.jobs WHERE ${where}`, pageSize);

  const twinRows = await jobsWhere(`devices.jobs.jobId = '${twinJob}'`, 1);
  assert.deepEqual(twinRows.pages.map((p) => p.rows.length), [1, 1, 1]);
  assertPaging(twinRows.pages, 'DeviceJob');
  assert.deepEqual(ids(twinRows.rows), ids(devices.slice(0, 3)));
  for (const row of twinRows.rows) {
    assert.equal(row.jobId, twinJob);
    assert.equal(row.jobType, 'scheduleUpdateTwin');
    assert.equal(row.status, 'completed');
    for (const field of ['createdDateTimeUtc', 'startTimeUtc', 'endTimeUtc', 'lastUpdatedDateTimeUtc']) {
      assert.equal(typeof row[field], 'string', field);
      assert.ok(!Number.isNaN(Date.parse(row[field])), `${field} is a date: ${row[field]}`);
    }
    assert.ok(Date.parse(row.startTimeUtc) <= Date.parse(row.endTimeUtc));
    assert.deepEqual(row.outcome, { deviceMethodResponse: null });
    assert.equal(row.error, undefined);
  }

  const failed = await jobsWhere(`devices.jobs.jobId = '${methodJob}' AND devices.jobs.status = 'failed'`);
  assert.deepEqual(ids(failed.rows), ids(devices.slice(2)));
  for (const row of failed.rows) {
    assert.equal(row.jobType, 'scheduleDeviceMethod');
    assert.equal(row.error.code, 'DeviceNotOnline');
    assert.equal(typeof row.error.description, 'string');
  }
  const completed = await jobsWhere(`devices.jobs.jobId = '${methodJob}' AND devices.jobs.status = 'completed'`);
  assert.deepEqual(completed.rows, []);

  // The device both jobs touched has one row per job.
  const both = await jobsWhere(`devices.jobs.deviceId = '${devices[2].deviceId}'`);
  assert.deepEqual(both.rows.map((r) => `${r.jobId}:${r.status}`).sort(),
    [`${methodJob}:failed`, `${twinJob}:completed`].sort());
  // The twin job's tag landed; FROM devices never includes job rows.
  const twin = (await registry.getTwin(devices[0].deviceId)).responseBody;
  assert.equal(twin.tags.queried, true);
  assert.equal(twin.jobs, undefined);
});

test('syntax errors are ArgumentError whose message gives line:column', async () => {
  const cases = [
    ['SELECT * FROM devices\nWHERE tags.a = = 1', '2:16'],
    ["SELECT * FROM devices WHERE tags.a = 'unterminated", '1:38'],
    ['SELECT * FROM devices WHERE', '1:28'],
    ['SELECT * FROM devices WHERE tags.a IN [1, 2', '1:44'],
  ];
  for (const [sql, position] of cases) {
    await assert.rejects(registry.createQuery(sql).next(), (err) => {
      assert.equal(err.name, 'ArgumentError', sql);
      assert.equal(err.response.statusCode, 400, sql);
      assert.ok(new RegExp(`(^|\\D)${position}(\\D|$)`).test(err.message),
        `${JSON.stringify(sql)}: '${err.message}' should give ${position}`);
      return true;
    });
  }
  // Not a syntax error but still refused: an unknown collection.
  await assert.rejects(registry.createQuery('SELECT * FROM nowhere').next(),
    (err) => err.name === 'ArgumentError' && err.response.statusCode === 400);
});
