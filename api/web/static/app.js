// The realmsync chat page. It talks to the daemon's API like any client,
// signed in by a session cookie. The realm on screen changes live, by
// Server-Sent Events (EventSource resumes with Last-Event-ID); the others
// are read every few seconds, for their names, roles and unread counts. A
// browser opens at most six connections to one host, so one stream it is.
'use strict';

const $ = (id) => document.getElementById(id);

const state = {
  me: '',              // this node's peer id
  realms: new Map(),   // id → {realm, lost}
  current: '',         // id of the realm on screen
  events: null,        // the EventSource of the realm on screen
  seen: new Set(),     // ids of the messages on screen
  members: [],         // of the realm on screen
};

const keepMessages = 500; // the newest messages a realm shows

// The page key: the sign-in hands it over in the address's fragment, which
// no server sees; it is kept in this origin's storage and taken out of the
// address at once. Every request carries it next to the session cookie
// (see the api package: the cookie alone reaches other local sites too).
const pageKey = (() => {
  const m = location.hash.match(/^#k=([A-Za-z0-9_-]+)$/);
  if (m) {
    localStorage.setItem('realmsync.key', m[1]);
    history.replaceState(null, '', '/');
  }
  return localStorage.getItem('realmsync.key') || '';
})();

// keyed adds the page key to the URL of a request whose headers the page
// cannot choose: an event stream, an image.
function keyed(path) {
  return path + (path.includes('?') ? '&' : '?') + 'key=' + encodeURIComponent(pageKey);
}

class APIError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : 'the daemon answered ' + status);
    this.status = status;
    this.code = (problem && problem.code) || '';
  }
  toString() { return this.code ? `${this.message} (${this.code})` : this.message; }
}

// api calls the daemon; body is JSON unless a type is given.
async function api(method, path, body, type) {
  const opts = { method, headers: { 'X-Realmsync-Key': pageKey }, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = type || 'application/json';
    opts.body = type ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, { detail: 'the daemon does not answer', code: 'unreachable' });
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (res.status === 401) showSignedOut();
  if (!res.ok) throw new APIError(res.status, data);
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v !== undefined) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function shortID(id) { return id.length > 12 ? id.slice(0, 6) + '…' + id.slice(-4) : id; }

function when(iso) {
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return today ? time : d.toLocaleDateString() + ' ' + time;
}

// notice says something briefly in the top bar.
let noticeTimer = 0;
function notice(text) {
  $('notice').textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $('notice').textContent = ''; }, 6000);
}

function showError(p, err) {
  p.textContent = String(err);
  p.hidden = false;
}

// ---- start, status, sign-out

function showSignedOut() {
  if (state.events) state.events.close();
  $('app').hidden = true;
  $('signed-out').hidden = false;
}

async function start() {
  let status;
  try {
    status = await api('GET', '/v1/status');
  } catch (e) {
    if (e.status !== 401) {
      $('signed-out').querySelector('p').textContent = String(e);
      $('signed-out').hidden = false;
    }
    return;
  }
  state.me = status.peer_id;
  $('app').hidden = false;
  showStatus(status);
  setInterval(refreshStatus, 5000);
  wire();
  await loadRealms();
  setInterval(loadRealms, 5000);
}

function showStatus(s) {
  const node = $('node');
  node.textContent = `${s.name} · ${s.peers === 0 ? 'no peers connected' : s.peers === 1 ? '1 peer' : s.peers + ' peers'}`;
  node.classList.toggle('online', s.peers > 0);
}

async function refreshStatus() {
  try {
    showStatus(await api('GET', '/v1/status'));
  } catch (e) {
    if (e.status !== 401) {
      $('node').textContent = 'the daemon does not answer';
      $('node').classList.remove('online');
    }
  }
}

// ---- realms

async function loadRealms() {
  let realms;
  try {
    ({ realms } = await api('GET', '/v1/realms'));
  } catch (e) {
    return; // the status line says the daemon is gone
  }
  for (const r of realms) addRealm(r);
  renderRealms();
  if (!state.current && realms.length > 0) select(realms[0].id);
}

function addRealm(r) {
  const have = state.realms.get(r.id);
  if (!have) {
    state.realms.set(r.id, { realm: r, lost: false });
    if (seen(r.id) === null) markSeen(r.id, r.messages);
    return;
  }
  const hadRole = have.realm.role;
  const shown = have.realm.messages || 0;
  have.realm = r;
  if (hadRole && !r.role) markLost(r.id);
  else if (state.current === r.id) {
    // A message may have come live while this answer was on its way.
    r.messages = Math.max(r.messages, shown);
    markSeen(r.id, r.messages);
    showRoomHead(have);
  }
}

// The count of messages seen in each realm is kept in the browser, so
// that unread counts last across reloads.
function seen(id) {
  const v = localStorage.getItem('realmsync.seen.' + id);
  return v === null ? null : Number(v);
}

function markSeen(id, count) {
  localStorage.setItem('realmsync.seen.' + id, String(count || 0));
}

function unread(entry) {
  if (entry.realm.id === state.current) return 0;
  return Math.max(0, (entry.realm.messages || 0) - (seen(entry.realm.id) || 0));
}

function renderRealms() {
  const list = $('realms');
  list.replaceChildren();
  const sorted = [...state.realms.values()].sort((a, b) => realmName(a.realm).localeCompare(realmName(b.realm)));
  for (const entry of sorted) {
    const r = entry.realm;
    const n = unread(entry);
    const label = n > 0 ? `${realmName(r)}, ${n} unread` : realmName(r);
    list.append(el('li', {},
      el('button', {
        class: 'realm' + (r.id === state.current ? ' current' : ''),
        'aria-current': r.id === state.current ? 'true' : false,
        'aria-label': label,
        'data-realm': r.id,
        onclick: () => { select(r.id); closeMenu(); },
      }, el('span', { class: 'name' }, realmName(r)),
      n > 0 ? el('span', { class: 'unread' }, String(n)) : null)));
  }
}

async function select(id) {
  const entry = state.realms.get(id);
  if (!entry) return;
  state.current = id;
  state.seen.clear();
  listen(id);
  renderRealms();
  $('empty').hidden = true;
  $('room').hidden = false;
  $('send-error').hidden = true;
  $('messages').replaceChildren();
  try {
    entry.realm = await api('GET', `/v1/realms/${id}`);
  } catch (e) { /* keep what the list said */ }
  markSeen(id, entry.realm.messages);
  renderRealms();
  showRoomHead(entry);
  await Promise.all([loadMessages(id), loadMembers(id)]);
}

// realmName is a realm's name, or what to show until its state arrives
// (right after joining, the realm's log is still on its way).
function realmName(r) { return r.name || 'joining…'; }

// refreshRealm reads a realm again: its name, this node's role.
async function refreshRealm(id) {
  const entry = state.realms.get(id);
  if (!entry) return;
  try { entry.realm = await api('GET', `/v1/realms/${id}`); } catch (e) { return; }
  renderRealms();
  if (state.current === id) showRoomHead(entry);
}

function showRoomHead(entry) {
  const r = entry.realm;
  $('room-name').textContent = realmName(r);
  $('room-role').textContent = r.role || 'no access';
  $('invite').hidden = r.role !== 'admin';
  $('lost').hidden = !entry.lost;
  $('text').disabled = entry.lost || r.role === 'reader' || r.role === '';
  $('composer').querySelector('button').disabled = $('text').disabled;
}

// ---- messages

async function loadMessages(id) {
  let after = '';
  let all = [];
  for (;;) {
    const q = new URLSearchParams({ limit: '1000' });
    if (after) q.set('after', after);
    const { messages } = await api('GET', `/v1/realms/${id}/messages?${q}`);
    all = all.concat(messages).slice(-keepMessages);
    if (messages.length < 1000) break;
    after = messages[messages.length - 1].id;
  }
  if (state.current !== id) return;
  for (const m of all) showMessage(m);
  scrollDown();
}

// showMessage adds a message to the realm on screen. A live one (sent
// here, or come by the event stream) also counts as read there, so that
// the realm's unread count starts from it when the page turns elsewhere.
function showMessage(m, live) {
  if (state.seen.has(m.id)) return;
  state.seen.add(m.id);
  const entry = state.realms.get(state.current);
  if (live && entry) {
    entry.realm.messages = (entry.realm.messages || 0) + 1;
    markSeen(state.current, entry.realm.messages);
  }
  const mine = m.author === state.me;
  const at = Date.parse(m.sent_at) || 0;
  const item = el('li', { class: mine ? 'msg mine' : 'msg', 'data-id': m.id, 'data-at': String(at) },
    el('div', { class: 'meta' },
      el('span', { class: 'author', title: m.author }, m.author_name || shortID(m.author)),
      el('time', { datetime: m.sent_at }, when(m.sent_at))),
    el('div', { class: 'text' }, m.text));
  // Messages arrive in the order they reach this node; one written
  // elsewhere a while ago goes to its place in the realm's order.
  const list = $('messages');
  let before = null;
  for (let c = list.lastElementChild; c && Number(c.dataset.at) > at; c = c.previousElementSibling) before = c;
  list.insertBefore(item, before);
  while (list.children.length > keepMessages) list.firstElementChild.remove();
}

function scrollDown() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

async function send(ev) {
  ev.preventDefault();
  const text = $('text').value;
  if (!text.trim() || !state.current) return;
  const id = state.current;
  $('send-error').hidden = true;
  try {
    const m = await api('POST', `/v1/realms/${id}/messages`, { text });
    $('text').value = '';
    if (state.current === id) {
      showMessage(m, true);
      scrollDown();
    }
  } catch (e) {
    showError($('send-error'), e);
    if (e.code === 'not_permitted') markLost(id);
  }
}

// ---- live events

// listen follows the events of realm id, and stops following the realm
// followed before.
function listen(id) {
  if (state.events) state.events.close();
  const entry = state.realms.get(id);
  const es = new EventSource(keyed(`/v1/realms/${id}/events`));
  state.events = es;
  es.addEventListener('message', (ev) => {
    if (state.current !== id) return;
    const m = JSON.parse(ev.data);
    const list = $('messages');
    const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    showMessage(m, true);
    if (atEnd || m.author === state.me) scrollDown();
  });
  es.addEventListener('member', (ev) => {
    const { members } = JSON.parse(ev.data);
    if (entry.realm.role && !members.some((m) => m.peer_id === state.me)) markLost(id);
    else refreshRealm(id);
    if (state.current === id) showMembers(members);
  });
  es.addEventListener('invite', (ev) => {
    if (state.current === id && $('invite-dialog').open) showInvites(JSON.parse(ev.data).invites);
  });
}

async function markLost(id) {
  const entry = state.realms.get(id);
  if (!entry) return;
  entry.lost = true;
  try { entry.realm = await api('GET', `/v1/realms/${id}`); } catch (e) { /* shown as it was */ }
  renderRealms();
  if (state.current === id) showRoomHead(entry);
}

// ---- members

async function loadMembers(id) {
  const { members } = await api('GET', `/v1/realms/${id}/members`);
  if (state.current === id) showMembers(members);
}

function showMembers(members) {
  state.members = members;
  const admin = state.realms.get(state.current)?.realm.role === 'admin';
  const list = $('members');
  list.replaceChildren();
  for (const m of members) {
    const me = m.peer_id === state.me;
    const name = (m.name || shortID(m.peer_id)) + (me ? ' (you)' : '');
    const li = el('li', { class: 'member', 'data-peer': m.peer_id },
      el('span', { class: m.online || me ? 'dot on' : 'dot', title: m.online || me ? 'online' : 'offline' }),
      el('span', { class: 'name', title: m.peer_id }, name));
    if (admin && !me) {
      const role = el('select', { 'aria-label': `Role of ${name}`,
        onchange: (ev) => setRole(m, ev.target.value, ev.target) });
      for (const r of ['reader', 'writer', 'admin']) role.append(el('option', { selected: r === m.role }, r));
      li.append(role, el('button', { class: 'danger', onclick: (ev) => removeMember(m, name, ev.currentTarget) }, 'Remove'));
    } else {
      li.append(el('span', { class: 'badge' }, m.role));
    }
    list.append(li);
  }
}

async function setRole(m, role, select) {
  $('members-error').hidden = true;
  try {
    await api('PATCH', `/v1/realms/${state.current}/members/${m.peer_id}`, { role });
  } catch (e) {
    select.value = m.role;
    showError($('members-error'), e);
  }
}

// removeMember asks first: the button's first press turns it into a
// confirmation that lasts a few seconds.
async function removeMember(m, name, button) {
  if (!button.classList.contains('confirm')) {
    button.classList.add('confirm');
    button.textContent = `Really remove ${name}?`;
    setTimeout(() => { button.classList.remove('confirm'); button.textContent = 'Remove'; }, 5000);
    return;
  }
  $('members-error').hidden = true;
  try {
    await api('DELETE', `/v1/realms/${state.current}/members/${m.peer_id}`);
    await loadMembers(state.current);
  } catch (e) {
    showError($('members-error'), e);
  }
}

// ---- dialogs

function openDialog(d) {
  for (const p of d.querySelectorAll('.error, .ok')) p.hidden = true;
  d.showModal();
}

async function createRealm(ev) {
  const d = $('new-realm-dialog');
  if (ev.submitter && ev.submitter.value === 'cancel') return;
  ev.preventDefault();
  try {
    const r = await api('POST', '/v1/realms', { name: $('realm-name').value.trim() });
    addRealm(r);
    d.close();
    $('realm-name').value = '';
    await select(r.id);
  } catch (e) {
    showError(d.querySelector('.error'), e);
  }
}

async function openInvites() {
  $('inv-result').hidden = true;
  openDialog($('invite-dialog'));
  try {
    showInvites((await api('GET', `/v1/realms/${state.current}/invites`)).invites);
  } catch (e) {
    showError($('invite-dialog').querySelector('.error'), e);
  }
}

async function createInvite(ev) {
  const d = $('invite-dialog');
  if (ev.submitter && ev.submitter.value === 'cancel') return;
  ev.preventDefault();
  d.querySelector('.error').hidden = true;
  try {
    const inv = await api('POST', `/v1/realms/${state.current}/invites`, {
      role: $('inv-role').value, expires_in: $('inv-expires').value, max_uses: Number($('inv-uses').value),
    });
    $('inv-qr').src = keyed(inv.qr_url);
    $('inv-token').value = inv.token;
    $('inv-copied').textContent = '';
    $('inv-result').hidden = false;
    showInvites((await api('GET', `/v1/realms/${state.current}/invites`)).invites);
  } catch (e) {
    showError(d.querySelector('.error'), e);
  }
}

function showInvites(invites) {
  const list = $('inv-list');
  list.replaceChildren();
  const open = invites.filter((i) => !i.revoked && i.uses < i.max_uses && new Date(i.expires_at) > new Date());
  if (open.length === 0) list.append(el('li', { class: 'muted' }, 'none'));
  for (const i of open) {
    list.append(el('li', {},
      el('span', {}, `${i.role}, used ${i.uses} of ${i.max_uses}, until ${when(i.expires_at)}`),
      el('button', { type: 'button', class: 'danger', onclick: () => revokeInvite(i) }, 'Revoke')));
  }
}

async function revokeInvite(i) {
  try {
    await api('DELETE', `/v1/realms/${state.current}/invites/${i.offer_id}`);
    showInvites((await api('GET', `/v1/realms/${state.current}/invites`)).invites);
  } catch (e) {
    showError($('invite-dialog').querySelector('.error'), e);
  }
}

async function copyToken() {
  const token = $('inv-token').value;
  try {
    await navigator.clipboard.writeText(token);
  } catch (e) {
    $('inv-token').select();
    document.execCommand('copy');
  }
  $('inv-copied').textContent = 'copied';
}

async function join(ev) {
  const d = $('join-dialog');
  if (ev.submitter && ev.submitter.value === 'cancel') { stopScan(); return; }
  ev.preventDefault();
  const err = d.querySelector('.error');
  const ok = d.querySelector('.ok');
  err.hidden = ok.hidden = true;
  const file = $('join-image').files[0];
  const token = $('join-token').value.trim();
  if (!file && !token) {
    showError(err, 'Paste a token, or choose a picture of the QR code.');
    return;
  }
  $('join-go').disabled = true;
  ok.textContent = 'Asking the inviting node…';
  ok.hidden = false;
  try {
    const r = file && !token
      ? await api('POST', '/v1/invites/accept', file, file.type || 'image/png')
      : await api('POST', '/v1/invites/accept', { token });
    $('join-token').value = '';
    $('join-image').value = '';
    d.close();
    closeMenu();
    notice(r.name ? `You joined ${r.name}.` : 'You joined; the realm is on its way.');
    addRealm(r);
    await select(r.id);
    refreshStatus();
  } catch (e) {
    ok.hidden = true;
    showError(err, e);
  } finally {
    $('join-go').disabled = false;
  }
}

// Scanning with the camera, where the browser can read QR codes.
let scanStream = null;

async function scan() {
  const video = $('scan-video');
  try {
    scanStream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
  } catch (e) {
    showError($('join-dialog').querySelector('.error'), 'The camera is not available: ' + e.message);
    return;
  }
  video.srcObject = scanStream;
  video.hidden = false;
  await video.play();
  const detector = new BarcodeDetector({ formats: ['qr_code'] });
  const look = async () => {
    if (!scanStream) return;
    try {
      const codes = await detector.detect(video);
      const hit = codes.find((c) => c.rawValue.startsWith('REALMSYNC-'));
      if (hit) {
        $('join-token').value = hit.rawValue;
        stopScan();
        return;
      }
    } catch (e) { /* try the next frame */ }
    setTimeout(look, 300);
  };
  look();
}

function stopScan() {
  if (scanStream) for (const t of scanStream.getTracks()) t.stop();
  scanStream = null;
  $('scan-video').hidden = true;
}

// ---- narrow screens

function closeMenu() {
  document.body.classList.remove('menu-open');
  $('menu').setAttribute('aria-expanded', 'false');
}

function wire() {
  $('composer').addEventListener('submit', send);
  $('text').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('new-realm').addEventListener('click', () => openDialog($('new-realm-dialog')));
  $('new-realm-form').addEventListener('submit', createRealm);
  $('join').addEventListener('click', () => openDialog($('join-dialog')));
  $('join-form').addEventListener('submit', join);
  $('join-dialog').addEventListener('close', stopScan);
  if ('BarcodeDetector' in window && navigator.mediaDevices) {
    $('scan-row').hidden = false;
    $('scan').addEventListener('click', scan);
  }
  $('invite').addEventListener('click', openInvites);
  $('invite-form').addEventListener('submit', createInvite);
  $('inv-copy').addEventListener('click', copyToken);
  $('show-members').addEventListener('click', () => { $('members-pane').hidden = false; });
  $('close-members').addEventListener('click', () => { $('members-pane').hidden = true; });
  $('menu').addEventListener('click', () => {
    const open = document.body.classList.toggle('menu-open');
    $('menu').setAttribute('aria-expanded', String(open));
  });
  $('signout').addEventListener('click', async () => {
    try { await api('DELETE', '/v1/session'); } catch (e) { /* signed out either way */ }
    localStorage.removeItem('realmsync.key');
    showSignedOut();
  });
}

start();
