// The iothub web console: sign-in, the header, and hash routing to the pages.
// The service connection string is kept in sessionStorage (gone when the tab closes) and
// every API call is signed with a SAS token computed here (sas.js); the hub serves these
// files without authentication and they hold no secret.

import { parseServiceConnectionString, ServiceTokenSigner } from './sas.js';
import { HubApi } from './api.js';
import { h, fill, errorBox } from './ui.js';
import * as devicesPage from './pages/devices.js';
import * as devicePage from './pages/device.js';
import * as jobsPage from './pages/jobs.js';
import * as jobPage from './pages/job.js';
import * as newJobPage from './pages/new_job.js';
import * as queryPage from './pages/query.js';
import * as statisticsPage from './pages/statistics.js';

const STORAGE_KEY = 'iothub.connectionString';
const main = document.getElementById('main');
let api = null;
let current = null;  // {controller} of the mounted page

// [pattern, page, nav section]; the first match wins.
const routes = [
  [/^\/devices\/?$/, devicesPage, 'devices'],
  [/^\/devices\/(.+)$/, devicePage, 'devices'],
  [/^\/jobs\/?$/, jobsPage, 'jobs'],
  [/^\/jobs\/new$/, newJobPage, 'jobs'],
  [/^\/jobs\/(.+)$/, jobPage, 'jobs'],
  [/^\/query$/, queryPage, 'query'],
  [/^\/statistics$/, statisticsPage, 'statistics'],
];

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// Timers and streams of a page stop when its signal aborts (on navigation or sign-out).
function pageContext(controller) {
  const signal = controller.signal;
  return {
    api,
    signal,
    navigate,
    // Runs fn now and then every `ms` until the page goes away; never overlaps itself.
    every(ms, fn) {
      let timer;
      const tick = async () => {
        if (signal.aborted) return;
        try { await fn(); } catch { /* the page shows its own errors */ }
        if (!signal.aborted) timer = setTimeout(tick, ms);
      };
      signal.addEventListener('abort', () => clearTimeout(timer));
      tick();
    },
  };
}

function unmount() {
  if (current) current.controller.abort();
  current = null;
}

function route() {
  unmount();
  if (!api) return showSignIn();
  const path = location.hash.replace(/^#/, '') || '/devices';
  for (const [pattern, page, section] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const a of document.querySelectorAll('[data-nav]')) {
      a.classList.toggle('active', a.dataset.nav === section);
    }
    const controller = new AbortController();
    current = { controller };
    fill(main);
    const params = match.slice(1).map((p) => decodeURIComponent(p));
    Promise.resolve(page.mount(main, pageContext(controller), ...params)).catch((err) => {
      if (!controller.signal.aborted) main.append(errorBox(err));
    });
    return;
  }
  navigate('#/devices');
}

async function signIn(connectionString) {
  const parsed = parseServiceConnectionString(connectionString);
  const signer = await ServiceTokenSigner.create(parsed);
  const candidate = new HubApi(signer);
  // One cheap call proves the key. The hub answers 401 both for a bad token and for a
  // missing permission, so a policy without RegistryRead (e.g. `service`) gets a second
  // chance with a call that needs ServiceConnect; other failures do not refuse the sign-in.
  try {
    await candidate.statisticsDevices();
  } catch (err) {
    if (err.status === 0) throw err;
    if (err.status === 401) {
      try {
        await candidate.listJobs({ pageSize: 1 });
      } catch (second) {
        if (second.status === 401 || second.status === 0) throw err;
      }
    }
  }
  api = candidate;
  document.getElementById('hub-name').textContent = parsed.hostName;
  document.getElementById('policy').textContent = parsed.keyName;
  document.getElementById('topbar').hidden = false;
  document.title = `${parsed.hostName} · iothub console`;
}

function signOut() {
  unmount();
  sessionStorage.removeItem(STORAGE_KEY);
  api = null;
  document.getElementById('topbar').hidden = true;
  document.title = 'iothub console';
  history.replaceState(null, '', location.pathname);
  showSignIn();
}

function showSignIn(error) {
  const input = h('textarea', {
    id: 'connection-string', name: 'connection-string', rows: 4, required: true, spellcheck: 'false',
    autocomplete: 'off', placeholder: 'HostName=…;SharedAccessKeyName=iothubowner;SharedAccessKey=…',
  });
  const slot = h('div', {}, error ? errorBox(error) : null);
  const button = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');
  const form = h('form', {
    class: 'signin-form',
    onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      slot.replaceChildren();
      try {
        await signIn(input.value);
        sessionStorage.setItem(STORAGE_KEY, input.value.trim());
        if (!location.hash || location.hash === '#') location.hash = '#/devices';
        route();
      } catch (err) {
        slot.append(errorBox(err));
      } finally {
        button.disabled = false;
      }
    },
  },
  h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'Service connection string'), input,
    h('span', { class: 'field-hint' }, 'Print one with “iothubd connection-string”. It stays in this tab’s session storage; every request is signed in the browser.')),
  slot, button);
  fill(main, h('div', { class: 'signin' },
    h('div', { class: 'signin-card' },
      h('div', { class: 'signin-brand' }, h('img', { src: 'favicon.svg', alt: '', width: 40, height: 40 }),
        h('div', {}, h('h1', {}, 'iothub console'), h('p', { class: 'muted' }, 'Devices, twins, methods and jobs of your hub'))),
      form)));
  input.focus();
}

document.getElementById('sign-out').addEventListener('click', signOut);
window.addEventListener('hashchange', route);

(async () => {
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (saved) {
    try {
      await signIn(saved);
    } catch (err) {
      sessionStorage.removeItem(STORAGE_KEY);
      return showSignIn(err);
    }
  }
  route();
})();
