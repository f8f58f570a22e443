// Small DOM helpers shared by the pages. Everything is built with createElement and text
// nodes (never innerHTML), so data from the hub cannot inject markup, and nothing needs an
// inline script or style (the Content-Security-Policy forbids both).

const BOOLEAN_PROPS = new Set(['disabled', 'checked', 'selected', 'readOnly', 'required', 'hidden']);

// h('a', {href: '#/x', class: 'link', onclick: fn}, 'text', child, [more]) -> Element
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (BOOLEAN_PROPS.has(k)) el[k] = Boolean(v);
    else if (v !== false) el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

// Replaces the children of `el`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const BADGE_KINDS = {
  connected: 'ok', enabled: 'ok', completed: 'ok', succeeded: 'ok',
  disconnected: 'muted', disabled: 'warn', pending: 'muted', queued: 'muted', scheduled: 'info', enqueued: 'muted',
  running: 'info', failed: 'bad', cancelled: 'warn', canceled: 'warn', unknown: 'muted',
};

// A pill for a status word (connection state, device status, job status).
export function badge(text, kind) {
  const word = String(text ?? 'unknown');
  const k = kind || BADGE_KINDS[word.toLowerCase()] || 'muted';
  return h('span', { class: `badge badge-${k}`, dataset: { status: word.toLowerCase() } }, word);
}

// A hub time as local text; Azure's "never" (0001-01-01) and missing times become a dash.
export function time(value) {
  if (!value || String(value).startsWith('0001-01-01')) return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

// "3 s ago", "5 min ago" …
export function ago(value) {
  if (!value || String(value).startsWith('0001-01-01')) return '';
  const seconds = Math.round((Date.now() - new Date(value).getTime()) / 1000);
  if (Number.isNaN(seconds)) return '';
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// A compact one-line rendering of a value for table cells.
export function compact(value) {
  if (value === undefined) return '';
  if (value === null) return 'null';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

// A readable error box for a failed call (ApiError or any Error).
export function errorBox(err) {
  const title = err.status ? `${err.code || 'Error'} (HTTP ${err.status})` : (err.code || 'Error');
  return h('div', { class: 'alert alert-error', role: 'alert' }, h('strong', {}, title), ' ', err.message);
}

// A region that shows one error at a time; `show(err)` / `clear()`.
export function errorSlot() {
  const el = h('div', { class: 'error-slot' });
  return {
    el,
    show(err) { fill(el, errorBox(err)); },
    clear() { el.replaceChildren(); },
  };
}

let toastArea;
// A short notice at the bottom of the screen.
export function toast(message, kind = 'ok') {
  if (!toastArea) {
    toastArea = h('div', { class: 'toasts', 'aria-live': 'polite' });
    document.body.append(toastArea);
  }
  const el = h('div', { class: `toast toast-${kind}` }, message);
  toastArea.append(el);
  setTimeout(() => el.remove(), 4000);
}

// A card with a title, optional actions on the right, and a body.
export function card(title, body, actions = []) {
  return h('section', { class: 'card' },
    h('header', { class: 'card-header' }, h('h2', {}, title), h('div', { class: 'card-actions' }, actions)),
    h('div', { class: 'card-body' }, body));
}

// A table with `columns` [{title, cell(row) -> node|string, class}] over `rows`.
export function table(columns, rows, { empty = 'Nothing to show', testid } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { 'data-testid': testid },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.class }, c.title)))),
      h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => h('td', { class: c.class }, c.cell(row))))))));
}

// A labelled form field.
export function field(label, control, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), control,
    hint ? h('span', { class: 'field-hint' }, hint) : null);
}

// Parses JSON typed by the user; throws an Error naming the field.
export function parseJsonField(text, what) {
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} is not valid JSON: ${err.message}`);
  }
}

// A progress bar over job statistics: succeeded, failed, running, pending.
export function progressBar(stats) {
  const total = Number(stats?.deviceCount) || 0;
  const bar = h('div', { class: 'progress', title: total ? '' : 'no devices' });
  if (total) {
    for (const [key, kind] of [['succeededCount', 'ok'], ['failedCount', 'bad'], ['runningCount', 'info']]) {
      const part = h('div', { class: `progress-part progress-${kind}` });
      part.style.width = `${(100 * (Number(stats[key]) || 0)) / total}%`;
      bar.append(part);
    }
  }
  return bar;
}

// Quotes a string for the query language ('…' with \' and \\ escaped).
export function quote(text) {
  return `'${String(text).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
