// The hub's service REST API (docs/protocol.md §4–§9) as the console uses it: same origin,
// `api-version=2021-04-12`, a freshly signed SAS token on every call (§1.7).

export const API_VERSION = '2021-04-12';
const JSON_TYPE = 'application/json; charset=utf-8';

// A failed call: `status` is the HTTP status, `code` the Azure error name (iothub-errorcode,
// or the `ErrorCode:` part of the body) and `message` the readable text of the body (§4.5).
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Reads an Azure error body: shape 1 `{"Message":"ErrorCode:<Name>;<text>"}` or shape 2, whose
// Message is JSON text with `message` and `errorCode` (§4.5).
export function describeError(status, headers, body) {
  let code = headers.get('iothub-errorcode') || '';
  let message = '';
  if (body && typeof body === 'object' && typeof body.Message === 'string') {
    const text = body.Message;
    const shape1 = /^ErrorCode:([^;]*);?(.*)$/s.exec(text);
    if (shape1) {
      code = code || shape1[1];
      message = shape1[2] || shape1[1];
    } else {
      try {
        const inner = JSON.parse(text);
        message = inner.message || text;
        if (!code && inner.errorCode) code = String(inner.errorCode);
      } catch {
        message = text;
      }
    }
  } else if (typeof body === 'string' && body.trim()) {
    message = body.trim().slice(0, 500);
  }
  if (!message) message = `The hub answered HTTP ${status}`;
  return new ApiError(status, code, message);
}

export class HubApi {
  constructor(signer) {
    this.signer = signer;
  }

  get hostName() { return this.signer.hostName; }

  // Sends one request; resolves with {status, headers, body} (body parsed when the answer is
  // JSON) for 2xx answers, rejects with ApiError otherwise. `query` holds extra query
  // parameters, `headers` extra request headers.
  async request(method, path, { body, headers = {}, query = {}, signal } = {}) {
    const params = new URLSearchParams({ 'api-version': API_VERSION, ...query });
    const init = {
      method,
      headers: { Authorization: await this.signer.token(), ...headers },
      signal,
      cache: 'no-store',
      credentials: 'omit',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = JSON_TYPE;
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`${path}?${params}`, init);
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'NetworkError', `The hub could not be reached (${err.message})`);
    }
    const text = await response.text();
    let parsed = text;
    if (/application\/json/.test(response.headers.get('content-type') || '') && text !== '') {
      try { parsed = JSON.parse(text); } catch { /* keep the text */ }
    }
    if (response.status >= 300) throw describeError(response.status, response.headers, parsed);
    return { status: response.status, headers: response.headers, body: parsed };
  }

  // One page of a twin or device-job query (§8.6): {items, continuation, itemType}.
  async query(text, { pageSize, continuation, signal } = {}) {
    const headers = {};
    if (pageSize) headers['x-ms-max-item-count'] = String(pageSize);
    if (continuation) headers['x-ms-continuation'] = continuation;
    const r = await this.request('POST', '/devices/query', { body: { query: text }, headers, signal });
    return {
      items: Array.isArray(r.body) ? r.body : [],
      continuation: r.headers.get('x-ms-continuation') || null,
      itemType: r.headers.get('x-ms-item-type') || '',
    };
  }

  // Counts the twins that match a WHERE condition ('' or '*' for all), with one COUNT() query.
  async countDevices(condition, { signal } = {}) {
    const where = condition && condition.trim() !== '*' ? ` WHERE ${condition}` : '';
    const { items } = await this.query(`SELECT COUNT() AS n FROM devices${where}`, { signal });
    return items.length ? Number(items[0].n) : 0;
  }

  getDevice(id, opts) { return this.request('GET', `/devices/${encodeURIComponent(id)}`, opts).then((r) => r.body); }

  // Creates a device with SAS authentication; empty keys make the hub generate them (§5.4).
  createDevice(id) {
    return this.request('PUT', `/devices/${encodeURIComponent(id)}`, {
      body: { deviceId: id, status: 'enabled', authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } } },
    }).then((r) => r.body);
  }

  // Enables or disables a device: update is PUT with If-Match "*" (§5.3), the device as read.
  async setDeviceStatus(id, status) {
    const device = await this.getDevice(id);
    device.status = status;
    return this.request('PUT', `/devices/${encodeURIComponent(id)}`, { body: device, headers: { 'If-Match': '"*"' } })
      .then((r) => r.body);
  }

  deleteDevice(id) {
    return this.request('DELETE', `/devices/${encodeURIComponent(id)}`, { headers: { 'If-Match': '"*"' } });
  }

  getTwin(id, opts) { return this.request('GET', `/twins/${encodeURIComponent(id)}`, opts).then((r) => r.body); }

  // PATCH with the twin's etag, double-quoted (§6.3, §6.4): a stale etag answers 412.
  patchTwin(id, patch, etag) {
    return this.request('PATCH', `/twins/${encodeURIComponent(id)}`, { body: patch, headers: { 'If-Match': `"${etag}"` } })
      .then((r) => r.body);
  }

  // A direct method (§7): resolves with the device's {status, payload}.
  invokeMethod(id, { methodName, payload, responseTimeoutInSeconds, connectTimeoutInSeconds }) {
    return this.request('POST', `/twins/${encodeURIComponent(id)}/methods`, {
      body: { methodName, payload, responseTimeoutInSeconds, connectTimeoutInSeconds },
    }).then((r) => r.body);
  }

  // One page of jobs (§9.7): {items, continuation}.
  async listJobs({ status, type, pageSize, continuation, signal } = {}) {
    const query = {};
    if (status) query.jobStatus = status;
    if (type) query.jobType = type;
    const headers = {};
    if (pageSize) headers['x-ms-max-item-count'] = String(pageSize);
    if (continuation) headers['x-ms-continuation'] = continuation;
    const r = await this.request('GET', '/jobs/v2/query', { query, headers, signal });
    return { items: Array.isArray(r.body) ? r.body : [], continuation: r.headers.get('x-ms-continuation') || null };
  }

  getJob(id, opts) { return this.request('GET', `/jobs/v2/${encodeURIComponent(id)}`, opts).then((r) => r.body); }
  createJob(job) { return this.request('PUT', `/jobs/v2/${encodeURIComponent(job.jobId)}`, { body: job }).then((r) => r.body); }
  cancelJob(id) { return this.request('POST', `/jobs/v2/${encodeURIComponent(id)}/cancel`).then((r) => r.body); }

  // Follows `GET /jobs/v2/{id}/events`, a text/event-stream whose events carry a JobResponse
  // as JSON in `data:`. EventSource cannot send Authorization, so this reads the stream with
  // fetch. Calls onJob for every event; resolves when the stream ends; rejects with ApiError
  // (e.g. 404 while the hub has no such route) so that the caller can fall back to polling.
  async followJobEvents(id, onJob, { signal } = {}) {
    const params = new URLSearchParams({ 'api-version': API_VERSION });
    const response = await fetch(`/jobs/v2/${encodeURIComponent(id)}/events?${params}`, {
      headers: { Authorization: await this.signer.token(), Accept: 'text/event-stream' },
      signal, cache: 'no-store', credentials: 'omit',
    });
    if (response.status >= 300 || !/text\/event-stream/.test(response.headers.get('content-type') || '')) {
      const text = await response.text();
      let body = text;
      try { body = JSON.parse(text); } catch { /* not JSON */ }
      throw describeError(response.status >= 300 ? response.status : 415, response.headers, body);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        try { onJob(JSON.parse(data)); } catch { /* an event we do not understand */ }
      }
    }
  }

  statisticsService(opts) { return this.request('GET', '/statistics/service', opts).then((r) => r.body); }
  statisticsDevices(opts) { return this.request('GET', '/statistics/devices', opts).then((r) => r.body); }
}
