// The official service SDK's JobClient (npm azure-iothub 1.16.6) with devices on the
// official device SDK (azure-iot-device 1.18.4 + azure-iot-device-mqtt 1.16.4), unmodified,
// against iothubd's /jobs/v2 (docs/protocol.md §9). Every test works on its own devices and jobs.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const {
  registry, jobClient, unique, createFleet, deviceIdIn, connectDevice, waitFor, waitForJob, readAllPages,
  serviceRequest, reportFromDevice, TERMINAL_JOB_STATUSES,
} = require('./helpers');

// A finished job: the expected terminal status, with createdTime and endTime
// (docs/protocol.md §9.4, §9.5).
function assertFinished(job, status) {
  assert.equal(job.status, status, `status of ${job.jobId}`);
  assert.ok(!Number.isNaN(Date.parse(job.createdTime)), `createdTime of ${job.jobId}: ${job.createdTime}`);
  assert.ok(!Number.isNaN(Date.parse(job.endTime)), `endTime of ${job.jobId}: ${job.endTime}`);
}

// deviceJobStatistics of a finished job, exactly; every device is in exactly one state.
function assertStatistics(job, expected) {
  const s = job.deviceJobStatistics;
  assert.deepEqual(s, { runningCount: 0, pendingCount: 0, canceledCount: 0, ...expected },
    `deviceJobStatistics of ${job.jobId}`);
  assert.equal(s.deviceCount, s.succeededCount + s.failedCount + s.runningCount + s.pendingCount + s.canceledCount);
}

const jobRows = async (jobId) => (await readAllPages(registry.createQuery(
  `SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '${jobId}'`, 100))).rows;

const closeAll = (connected) => Promise.all(connected.map((c) => c.close()));

const LOCK_DOOR = { methodName: 'lockDoor', payload: { lockTime: '10m' } };

// Resolves when the device got {building: 43, floor: 3} as a desired notification.
const desiredArrived = (connected, deviceId) => waitFor(
  () => connected.desired.some((u) => u.building === 43 && u.floor === 3), 10000,
  `desired {building: 43, floor: 3} on ${deviceId} (got ${JSON.stringify(connected.desired)})`);

test('scheduleDeviceMethod on 22 devices: answers of any status succeed, offline devices fail DeviceNotOnline',
  async () => {
    const { devices } = await createFleet('jmethod', 22);
    const online = devices.slice(0, 6);
    const silent = devices[6];  // connected, but without a lockDoor handler: the SDK never answers
    const statusOf = (id) => (id === online[5].deviceId ? 500 : 200 + online.findIndex((d) => d.deviceId === id));
    const lockDoor = (payload, deviceId) => ({
      status: statusOf(deviceId), payload: { locked: payload.lockTime, deviceId },
    });
    const connected = await Promise.all([
      ...online.map((d, i) => connectDevice(d, { transport: i % 3 === 2 ? MqttWs : Mqtt, methods: { lockDoor } })),
      connectDevice(silent),
    ]);
    try {
      const connectedNow = await readAllPages(registry.createQuery(
        `SELECT deviceId FROM devices WHERE ${deviceIdIn(devices)} AND connectionState = 'Connected'`));
      assert.deepEqual(connectedNow.rows.map((r) => r.deviceId).sort(),
        [...online, silent].map((d) => d.deviceId).sort());

      const jobId = unique('jmethod');
      const created = (await jobClient.scheduleDeviceMethod(jobId, deviceIdIn(devices),
        { ...LOCK_DOOR, responseTimeoutInSeconds: 5 })).jobStatus;
      assert.equal(created.jobId, jobId);
      assert.equal(created.type, 'scheduleDeviceMethod');
      assert.equal(created.status, 'queued');

      const { job } = await waitForJob(jobId);
      assertFinished(job, 'completed');
      assertStatistics(job, { deviceCount: 22, succeededCount: 6, failedCount: 16 });
      assert.equal(job.cloudToDeviceMethod.methodName, 'lockDoor');
      assert.deepEqual(job.cloudToDeviceMethod.payload, { lockTime: '10m' });
      assert.equal(job.cloudToDeviceMethod.responseTimeoutInSeconds, 5);
      assert.ok(Date.parse(job.endTime) >= Date.parse(job.startTime));

      // Device side: each answering device got the call exactly once, with the payload.
      for (const c of connected.slice(0, 6)) assert.deepEqual(c.calls, [LOCK_DOOR]);

      const rows = await jobRows(jobId);
      assert.equal(rows.length, 22);
      for (const row of rows) {
        assert.equal(row.jobType, 'scheduleDeviceMethod');
        if (online.some((d) => d.deviceId === row.deviceId)) {
          assert.equal(row.status, 'completed', row.deviceId);
          assert.deepEqual(row.outcome.deviceMethodResponse,
            { status: statusOf(row.deviceId), payload: { locked: '10m', deviceId: row.deviceId } });
          assert.equal(row.error, undefined);
        } else if (row.deviceId === silent.deviceId) {
          // Timed out (504101-like): failed with an error, no response (docs/protocol.md §9.9).
          assert.equal(row.status, 'failed', row.deviceId);
          assert.equal(typeof row.error.code, 'string');
          assert.notEqual(row.error.code, 'DeviceNotOnline');
          assert.equal(row.outcome.deviceMethodResponse, null);
        } else {
          assert.equal(row.status, 'failed', row.deviceId);
          assert.equal(row.error.code, 'DeviceNotOnline', row.deviceId);
          assert.equal(row.outcome.deviceMethodResponse, null);
        }
      }
    } finally {
      await closeAll(connected);
    }
  });

test('a method job with connectTimeoutInSeconds (raw REST, as the Azure CLI sends it) waits for devices', async () => {
  // The Node JobClient drops connectTimeoutInSeconds (docs/protocol.md §9.2); other clients
  // send it.
  const { devices: [late, never] } = await createFleet('jconnect', 2);
  const jobId = unique('jconnect');
  const put = await serviceRequest('PUT', `/jobs/v2/${jobId}`, {
    jobId, type: 'scheduleDeviceMethod', queryCondition: deviceIdIn([late, never]), startTime: null,
    cloudToDeviceMethod: { ...LOCK_DOOR, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 6 },
  });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.equal(put.body.status, 'queued');
  assert.equal(put.body.cloudToDeviceMethod.connectTimeoutInSeconds, 6);
  // Both devices wait for a connection; `late` connects in time, `never` does not.
  await waitForJob(jobId, { until: (job) => job.deviceJobStatistics.runningCount === 2, timeoutMs: 5000 });
  const connected = await connectDevice(late, { methods: { lockDoor: (payload) => ({ status: 200, payload }) } });
  try {
    const { job } = await waitForJob(jobId, { timeoutMs: 20000 });
    assertFinished(job, 'completed');
    assertStatistics(job, { deviceCount: 2, succeededCount: 1, failedCount: 1 });
    assert.deepEqual(connected.calls, [LOCK_DOOR]);
    const rows = await jobRows(jobId);
    const row = (id) => rows.find((r) => r.deviceId === id);
    assert.deepEqual(row(late.deviceId).outcome.deviceMethodResponse, { status: 200, payload: { lockTime: '10m' } });
    assert.equal(row(never.deviceId).status, 'failed');
    assert.equal(row(never.deviceId).error.code, 'DeviceNotOnline');
  } finally {
    await connected.close();
  }
});

test('scheduleTwinUpdate on 20 devices: tags and desired applied, connected devices notified', async () => {
  const fleet = unique('jtwin');
  const { devices } = await createFleet('jtwin', 20, () => ({ tags: { fleet } }));
  // A device outside the condition must stay untouched.
  const { devices: [outsider] } = await createFleet('jtwin-out', 1, () => ({ tags: { fleet: `${fleet}-other` } }));
  const online = devices.slice(0, 4);
  const connected = await Promise.all(online.map((d) => connectDevice(d, { desired: true })));
  try {
    const jobId = unique('jtwin');
    const patch = {
      etag: '*', tags: { site: { building: 43, floor: 3 } }, properties: { desired: { building: 43, floor: 3 } },
    };
    const created = (await jobClient.scheduleTwinUpdate(jobId, `tags.fleet = '${fleet}'`, patch)).jobStatus;
    assert.equal(created.status, 'queued');
    assert.equal(created.type, 'scheduleUpdateTwin');

    const { job } = await waitForJob(jobId);
    assertFinished(job, 'completed');
    assertStatistics(job, { deviceCount: 20, succeededCount: 20, failedCount: 0 });

    for (const d of devices) {
      const twin = (await registry.getTwin(d.deviceId)).responseBody;
      assert.deepEqual(twin.tags, { fleet, site: { building: 43, floor: 3 } }, d.deviceId);
      assert.equal(twin.properties.desired.building, 43, d.deviceId);
      assert.equal(twin.properties.desired.floor, 3, d.deviceId);
    }
    const untouched = (await registry.getTwin(outsider.deviceId)).responseBody;
    assert.equal(untouched.tags.site, undefined);
    assert.equal(untouched.properties.desired.building, undefined);

    // Device side: the desired patch arrived as a notification.
    await Promise.all(connected.map((c, i) => desiredArrived(c, online[i].deviceId)));
    const rows = await jobRows(jobId);
    assert.equal(rows.length, 20);
    assert.ok(rows.every((r) => r.status === 'completed' && r.jobType === 'scheduleUpdateTwin'), JSON.stringify(rows));
  } finally {
    await closeAll(connected);
  }
});

// Statuses must appear in lifecycle order (some may be too short to observe).
function assertLifecycle(seen, order) {
  let at = -1;
  for (const s of seen) {
    const k = order.indexOf(s);
    assert.ok(k > at, `status ${s} out of order in ${seen.join(' -> ')}`);
    at = k;
  }
}

test('reference scenario: lockDoor and the building/floor twin update scheduled a few seconds ahead', async () => {
  const { devices } = await createFleet('jref', 3);
  const connected = await Promise.all(devices.map((d) => connectDevice(d, {
    desired: true,
    methods: { lockDoor: () => ({ status: 200, payload: { Response: 'lockDoor called successfully' } }) },
  })));
  try {
    const startTime = new Date(Date.now() + 5000);
    const methodJob = unique('jref-lock');
    const twinJob = unique('jref-twin');
    const condition = deviceIdIn(devices);
    const m = (await jobClient.scheduleDeviceMethod(methodJob, condition,
      { ...LOCK_DOOR, responseTimeoutInSeconds: 15 }, startTime, 300)).jobStatus;
    const t = (await jobClient.scheduleTwinUpdate(twinJob, condition,
      { etag: '*', properties: { desired: { building: 43, floor: 3 }, reported: {} } }, startTime, 300)).jobStatus;
    // Created jobs answer "queued" even with a future start (docs/protocol.md §9.6).
    for (const created of [m, t]) {
      assert.equal(created.status, 'queued');
      assert.equal(Date.parse(created.startTime), startTime.getTime());
      assert.equal(created.maxExecutionTimeInSeconds, 300);
    }
    const methodSeen = ['queued'];
    const twinSeen = ['queued'];
    const lifecycle = ['queued', 'scheduled', 'running', 'completed'];
    // Before the start time: scheduled, nothing done on the devices.
    await waitForJob(methodJob, { seen: methodSeen, until: (job) => job.status !== 'queued', timeoutMs: 3000 });
    assert.ok(Date.now() < startTime.getTime(), 'the job left "queued" before its start time');
    assert.equal(methodSeen[methodSeen.length - 1], 'scheduled');
    assert.ok(connected.every((c) => c.calls.length === 0), 'no call before the start time');
    const [{ job: methodDone }, { job: twinDone }] = await Promise.all([
      waitForJob(methodJob, { seen: methodSeen, timeoutMs: 20000 }),
      waitForJob(twinJob, { seen: twinSeen, timeoutMs: 20000 }),
    ]);
    assertLifecycle(methodSeen, lifecycle);
    assertLifecycle(twinSeen, lifecycle);
    assert.ok(twinSeen.includes('scheduled'), `twin job statuses ${twinSeen.join(' -> ')}`);
    for (const job of [methodDone, twinDone]) {
      assertFinished(job, 'completed');
      assertStatistics(job, { deviceCount: 3, succeededCount: 3, failedCount: 0 });
      assert.ok(Date.parse(job.endTime) >= startTime.getTime(), 'ended after its start time');
    }
    for (const [i, c] of connected.entries()) {
      assert.deepEqual(c.calls, [LOCK_DOOR]);
      await desiredArrived(c, devices[i].deviceId);
    }
    for (const row of await jobRows(methodJob)) {
      assert.ok(Date.parse(row.startTimeUtc) >= startTime.getTime() - 1, `device started at ${row.startTimeUtc}`);
      assert.deepEqual(row.outcome.deviceMethodResponse,
        { status: 200, payload: { Response: 'lockDoor called successfully' } });
    }
  } finally {
    await closeAll(connected);
  }
});

test('devices are selected when the job starts; a job selecting nobody completes with deviceCount 0', async () => {
  const fleet = unique('jselect');
  const { devices } = await createFleet('jselect', 3, (i) => (i < 2 ? { tags: { fleet } } : null));
  const jobId = unique('jselect');
  const startTime = new Date(Date.now() + 5000);
  await jobClient.scheduleTwinUpdate(jobId, `tags.fleet = '${fleet}'`, { etag: '*', tags: { selected: true } },
    startTime, 60);
  // Before the start: device 1 leaves the condition, device 2 joins it (docs/protocol.md §9.9).
  await registry.updateTwin(devices[1].deviceId, { tags: { fleet: null } }, '*');
  await registry.updateTwin(devices[2].deviceId, { tags: { fleet } }, '*');
  assert.ok(Date.now() < startTime.getTime() - 500, 'retagged before the start time');
  const { job } = await waitForJob(jobId, { timeoutMs: 20000 });
  assertFinished(job, 'completed');
  assertStatistics(job, { deviceCount: 2, succeededCount: 2, failedCount: 0 });
  const twins = await Promise.all(devices.map(async (d) => (await registry.getTwin(d.deviceId)).responseBody));
  assert.deepEqual(twins.map((twin) => twin.tags.selected), [true, undefined, true]);

  const empty = unique('jnobody');
  await jobClient.scheduleDeviceMethod(empty, `tags.fleet = '${fleet}-nobody'`, LOCK_DOOR);
  const { job: none } = await waitForJob(empty);
  assertFinished(none, 'completed');
  assertStatistics(none, { deviceCount: 0, succeededCount: 0, failedCount: 0 });
  assert.deepEqual(await jobRows(empty), []);
});

test('cancelJob: a job scheduled in the future is cancelled and never runs', async () => {
  const { devices } = await createFleet('jcancel', 2);
  const connected = await connectDevice(devices[0], { methods: { lockDoor: () => ({ status: 200, payload: null }) } });
  try {
    const jobId = unique('jcancel');
    await jobClient.scheduleDeviceMethod(jobId, deviceIdIn(devices), LOCK_DOOR, new Date(Date.now() + 60000), 600);
    await waitForJob(jobId, { until: (job) => job.status === 'scheduled', timeoutMs: 10000 });
    const cancelled = (await jobClient.cancelJob(jobId)).jobStatus;
    assert.equal(cancelled.jobId, jobId);
    assert.ok(['scheduled', 'cancelled'].includes(cancelled.status), `cancel answered ${cancelled.status}`);
    const { job } = await waitForJob(jobId, { timeoutMs: 10000 });
    assertFinished(job, 'cancelled');
    const s = job.deviceJobStatistics;
    assert.equal(s.succeededCount + s.failedCount + s.runningCount, 0, JSON.stringify(s));
    assert.equal(s.deviceCount, s.pendingCount + s.canceledCount);
    // Cancelling again changes nothing.
    assert.equal((await jobClient.cancelJob(jobId)).jobStatus.status, 'cancelled');
    assert.deepEqual(connected.calls, []);
    assert.ok((await jobRows(jobId)).every((r) => r.status === 'canceled'));
  } finally {
    await connected.close();
  }
});

test('cancelJob on a running job with slow devices ends it cancelled', async () => {
  const { devices } = await createFleet('jslow', 5);
  const slow = devices.slice(0, 3);
  let release;
  const released = new Promise((r) => { release = r; });
  const update = async () => { await released; return { status: 200, payload: { updated: true } }; };
  const connected = await Promise.all(slow.map((d) => connectDevice(d, { methods: { update } })));
  try {
    const jobId = unique('jslow');
    await jobClient.scheduleDeviceMethod(jobId, deviceIdIn(devices),
      { methodName: 'update', responseTimeoutInSeconds: 30 });
    // Running: the slow devices hold their calls until released; the two offline ones failed.
    await waitFor(() => connected.every((c) => c.calls.length === 1), 15000, 'calls on the slow devices');
    const { job: running } = await waitForJob(jobId, {
      until: (job) => job.deviceJobStatistics.runningCount === 3 && job.deviceJobStatistics.failedCount === 2,
      timeoutMs: 10000,
    });
    assert.equal(running.status, 'running');
    const cancelled = (await jobClient.cancelJob(jobId)).jobStatus;
    assert.ok(['running', 'cancelled'].includes(cancelled.status), `cancel answered ${cancelled.status}`);
    release();
    const { job } = await waitForJob(jobId, { timeoutMs: 40000 });
    assertFinished(job, 'cancelled');
    const s = job.deviceJobStatistics;
    assert.equal(s.deviceCount, 5);
    assert.equal(s.runningCount + s.pendingCount, 0, JSON.stringify(s));
    assert.equal(s.deviceCount, s.succeededCount + s.failedCount + s.canceledCount);
    assert.equal(s.failedCount, 2, 'the two offline devices failed before the cancel');
    const rows = await jobRows(jobId);
    assert.equal(rows.length, 5);
    assert.ok(rows.every((r) => ['completed', 'failed', 'canceled'].includes(r.status)), JSON.stringify(rows));
  } finally {
    release();
    await closeAll(connected);
  }
});

test('jobClient.createQuery filters by type and status and pages', async () => {
  const { devices } = await createFleet('jlist', 2);
  const twinJobs = [unique('jlist-twin'), unique('jlist-twin')];
  const futureJob = unique('jlist-future');
  for (const id of twinJobs) {
    await jobClient.scheduleTwinUpdate(id, deviceIdIn(devices), { etag: '*', tags: { listed: id } });
  }
  await jobClient.scheduleDeviceMethod(futureJob, deviceIdIn(devices), LOCK_DOOR, new Date(Date.now() + 300000), 600);
  try {
    for (const id of twinJobs) assertFinished((await waitForJob(id)).job, 'completed');
    await waitForJob(futureJob, { until: (job) => job.status === 'scheduled', timeoutMs: 10000 });

    const completedTwin = await readAllPages(jobClient.createQuery('scheduleUpdateTwin', 'completed', 1));
    assert.ok(completedTwin.pages.every((p) => p.itemType === 'JobResponse' && p.rows.length === 1));
    assert.equal(completedTwin.pages[completedTwin.pages.length - 1].continuation, undefined);
    const found = completedTwin.rows.map((j) => j.jobId);
    assert.equal(new Set(found).size, found.length, 'no job twice');
    for (const id of twinJobs) assert.ok(found.includes(id), `${id} listed`);
    assert.ok(!found.includes(futureJob));
    for (const j of completedTwin.rows) {
      assert.equal(j.type, 'scheduleUpdateTwin');
      assert.equal(j.status, 'completed');
      assert.equal(typeof j.deviceJobStatistics.deviceCount, 'number');
    }

    const scheduledMethod = await readAllPages(jobClient.createQuery('scheduleDeviceMethod', 'scheduled'));
    assert.ok(scheduledMethod.rows.some((j) => j.jobId === futureJob));
    assert.ok(scheduledMethod.rows.every((j) => j.type === 'scheduleDeviceMethod' && j.status === 'scheduled'));

    const all = await readAllPages(jobClient.createQuery(undefined, undefined, 2));
    for (const id of [...twinJobs, futureJob]) {
      assert.ok(all.rows.some((j) => j.jobId === id), `${id} listed unfiltered`);
    }
    assert.ok(all.rows.every((j) => ['scheduleUpdateTwin', 'scheduleDeviceMethod'].includes(j.type)));
  } finally {
    await jobClient.cancelJob(futureJob);
  }
  assertFinished((await waitForJob(futureJob)).job, 'cancelled');
});

test('job errors: bad queryCondition 400, reused id 409, unknown job 404 JobNotFound', async () => {
  const { devices } = await createFleet('jerr', 1);
  await assert.rejects(jobClient.scheduleTwinUpdate(unique('jerr'), "deviceId = = 'x'", { etag: '*', tags: { a: 1 } }),
    (err) => err.name === 'ArgumentError' && err.response.statusCode === 400);
  await assert.rejects(jobClient.scheduleDeviceMethod(unique('jerr'), 'tags.a IN [1,', { methodName: 'm' }),
    (err) => err.name === 'ArgumentError' && err.response.statusCode === 400);

  const jobId = unique('jerr');
  await jobClient.scheduleTwinUpdate(jobId, deviceIdIn(devices), { etag: '*', tags: { a: 1 } });
  // Node maps every 409 to DeviceAlreadyExistsError; the code is JobAlreadyExists (docs/compatibility.md).
  await assert.rejects(jobClient.scheduleDeviceMethod(jobId, deviceIdIn(devices), { methodName: 'm' }), (err) => {
    assert.equal(err.response.statusCode, 409);
    assert.equal(err.name, 'DeviceAlreadyExistsError');
    assert.match(err.responseBody, /JobAlreadyExists/);
    return true;
  });
  const { job } = await waitForJob(jobId);
  assert.equal(job.type, 'scheduleUpdateTwin', 'the first job was not replaced');
  assert.ok(TERMINAL_JOB_STATUSES.includes(job.status));

  for (const call of [() => jobClient.getJob(unique('jnone')), () => jobClient.cancelJob(unique('jnone'))]) {
    await assert.rejects(call(), (err) => {
      assert.equal(err.response.statusCode, 404);
      assert.equal(err.message, 'Not found');
      assert.equal(err.response.headers['iothub-errorcode'], 'JobNotFound');
      assert.match(JSON.parse(err.responseBody).Message, /^ErrorCode:JobNotFound;/);
      return true;
    });
  }
});

// iothub's job extensions (docs/jobs.md), sent over raw REST since the SDK knows none of them,
// read back through the official JobClient: getJob and createQuery return the jobs without
// error, the standard fields intact and the extensions as the hub echoes them; a job the SDK
// schedules itself carries none of them.
const JOB_EXTENSIONS = ['deviceOperationsPerSecond', 'priority', 'failOnDeviceStatus', 'rollout', 'abort', 'retry',
  'offlineDevices', 'convergence', 'continuous', 'rerunOf'];

test('jobs with iothub extensions read through getJob and createQuery; an SDK-scheduled job shows none', async () => {
  const { devices } = await createFleet('jext', 2);
  const [online, offline] = devices;
  // `offline` reported the desired values once, before the twin job: it converges at its update.
  await reportFromDevice(offline, { building: 43, floor: 3 });
  const connected = await connectDevice(online, { methods: { lockDoor: (payload) => ({ status: 200, payload }) } });
  try {
    const condition = deviceIdIn(devices);
    const methodJob = unique('jext-method');
    const methodExtensions = {
      priority: 5,
      retry: { maxAttempts: 2, backoffSeconds: 1 },
      rollout: { maximumPerMinute: 600 },
      abort: { criteria: [{ failureType: 'any', thresholdPercentage: 50, minNumberOfExecutedDevices: 10 }] },
      offlineDevices: { waitSeconds: 5 },
    };
    const methodPut = await serviceRequest('PUT', `/jobs/v2/${methodJob}`, {
      jobId: methodJob, type: 'scheduleDeviceMethod', queryCondition: condition,
      cloudToDeviceMethod: { ...LOCK_DOOR, responseTimeoutInSeconds: 10 }, ...methodExtensions,
    });
    assert.equal(methodPut.status, 200, JSON.stringify(methodPut.body));
    const twinJob = unique('jext-twin');
    const twinPut = await serviceRequest('PUT', `/jobs/v2/${twinJob}`, {
      jobId: twinJob, type: 'scheduleUpdateTwin', queryCondition: condition,
      updateTwin: { etag: '*', properties: { desired: { building: 43, floor: 3 } } },
      convergence: { timeoutSeconds: 5 }, continuous: false,
    });
    assert.equal(twinPut.status, 200, JSON.stringify(twinPut.body));
    const sdkJob = unique('jext-sdk');
    const sdkCreated = (await jobClient.scheduleDeviceMethod(sdkJob, condition,
      { ...LOCK_DOOR, responseTimeoutInSeconds: 10 })).jobStatus;
    assert.equal(sdkCreated.status, 'queued');

    // The extensions as echoed: as sent, retry with its default retryOn; continuous false
    // is the default (absent or false).
    const assertMethodExtensions = (job) => {
      assert.equal(job.priority, 5, `priority of ${job.jobId}`);
      assert.deepEqual(job.rollout, methodExtensions.rollout);
      assert.deepEqual(job.abort, methodExtensions.abort);
      assert.deepEqual(job.offlineDevices, methodExtensions.offlineDevices);
      assert.deepEqual(job.retry, { ...methodExtensions.retry, retryOn: ['DeviceNotOnline', 'GatewayTimeout'] });
      for (const name of ['deviceOperationsPerSecond', 'failOnDeviceStatus', 'convergence', 'continuous', 'rerunOf']) {
        assert.equal(job[name], undefined, `${name} of ${job.jobId}`);
      }
    };
    const assertTwinExtensions = (job) => {
      assert.deepEqual(job.convergence, { timeoutSeconds: 5 });
      assert.ok(job.continuous === undefined || job.continuous === false, `continuous of ${job.jobId}: ${job.continuous}`);
      for (const name of JOB_EXTENSIONS.filter((n) => n !== 'convergence' && n !== 'continuous')) {
        assert.equal(job[name], undefined, `${name} of ${job.jobId}`);
      }
    };
    const assertNoExtensions = (job) => {
      for (const name of JOB_EXTENSIONS) assert.equal(job[name], undefined, `${name} of ${job.jobId}`);
    };
    assertMethodExtensions(methodPut.body);
    assertTwinExtensions(twinPut.body);
    assertNoExtensions(sdkCreated);

    // Each ends completed: `online` answers (method jobs) and never reports (NotConverged
    // after 5 s); `offline` fails DeviceNotOnline (after waiting 5 s in the extended job)
    // and converges at once.
    const [{ job: methodDone }, { job: twinDone }, { job: sdkDone }] = await Promise.all(
      [methodJob, twinJob, sdkJob].map((id) => waitForJob(id, { timeoutMs: 30000 })));
    const standard = (job, jobId, type) => {
      assert.equal(job.jobId, jobId);
      assert.equal(job.type, type);
      assertFinished(job, 'completed');
      assert.equal(job.queryCondition, condition);
      assertStatistics(job, { deviceCount: 2, succeededCount: 1, failedCount: 1 });
    };
    standard(methodDone, methodJob, 'scheduleDeviceMethod');
    assert.equal(methodDone.cloudToDeviceMethod.methodName, 'lockDoor');
    assert.deepEqual(methodDone.cloudToDeviceMethod.payload, LOCK_DOOR.payload);
    assertMethodExtensions(methodDone);
    standard(twinDone, twinJob, 'scheduleUpdateTwin');
    assert.deepEqual(twinDone.updateTwin.properties.desired, { building: 43, floor: 3 });
    assertTwinExtensions(twinDone);
    standard(sdkDone, sdkJob, 'scheduleDeviceMethod');
    assertNoExtensions(sdkDone);
    assert.deepEqual(connected.calls, [LOCK_DOOR, LOCK_DOOR], 'one call per method job');
    const twinRows = await jobRows(twinJob);
    const row = (id) => twinRows.find((r) => r.deviceId === id);
    assert.equal(row(offline.deviceId).status, 'completed', JSON.stringify(twinRows));
    assert.equal(row(online.deviceId).error.code, 'NotConverged', JSON.stringify(twinRows));
    const methodRows = await jobRows(methodJob);
    assert.equal(methodRows.find((r) => r.deviceId === offline.deviceId).error.code, 'DeviceNotOnline');

    // The jobs list (JobResponse pages), filtered by type and status, and unfiltered.
    const listed = async (type) => {
      const { rows, pages } = await readAllPages(jobClient.createQuery(type, 'completed', 50));
      assert.ok(pages.every((p) => p.itemType === 'JobResponse'), JSON.stringify(pages.map((p) => p.itemType)));
      return rows;
    };
    const methods = await listed('scheduleDeviceMethod');
    const twins = await listed('scheduleUpdateTwin');
    const all = await listed(undefined);
    const find = (rows, jobId) => {
      const found = rows.filter((j) => j.jobId === jobId);
      assert.equal(found.length, 1, `${jobId} listed once`);
      return found[0];
    };
    for (const rows of [methods, all]) {
      const m = find(rows, methodJob);
      standard(m, methodJob, 'scheduleDeviceMethod');
      assertMethodExtensions(m);
      const s = find(rows, sdkJob);
      standard(s, sdkJob, 'scheduleDeviceMethod');
      assertNoExtensions(s);
    }
    for (const rows of [twins, all]) {
      const t = find(rows, twinJob);
      standard(t, twinJob, 'scheduleUpdateTwin');
      assertTwinExtensions(t);
    }
    assert.ok(!methods.some((j) => j.jobId === twinJob));
    assert.ok(!twins.some((j) => j.jobId === methodJob || j.jobId === sdkJob));
  } finally {
    await connected.close();
  }
});
