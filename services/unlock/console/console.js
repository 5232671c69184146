// The unlock console: plain DOM, no framework, no inline script (the page's CSP forbids it).
// Every value from the server goes into the page as text, never as HTML. Every state-changing
// request carries the anti-forgery header /v1/me hands out for this client certificate.
'use strict';

const $ = (id) => document.getElementById(id);
let csrf = '';
let me = null;
let lastToken = null;

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function showError(p) {
  const box = $('error');
  if (!p) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  box.hidden = false;
  box.textContent = `${p.code || 'error'}: ${p.detail || p.title || 'request failed'}`;
  box.dataset.code = p.code || '';
}

async function api(method, url, body) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') headers['x-pks-csrf'] = csrf;
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin', cache: 'no-store' });
  const data = await r.json().catch(() => ({ code: 'PKS_INTERNAL', detail: `HTTP ${r.status}` }));
  if (!r.ok) {
    showError(data);
    throw Object.assign(new Error(data.code), { problem: data });
  }
  showError(null);
  return data;
}

function rows(tbody, items, cells) {
  const tb = $(tbody).querySelector('tbody');
  tb.replaceChildren();
  for (const it of items) {
    const tr = el('tr');
    for (const c of cells(it)) {
      const td = el('td');
      if (c instanceof Node) td.append(c);
      else td.textContent = c === undefined || c === null ? '' : String(c);
      tr.append(td);
    }
    tb.append(tr);
  }
}

function button(text, cls, onClick) {
  const b = el('button', text, { type: 'button', class: cls });
  b.addEventListener('click', () => onClick().catch(() => {}));
  return b;
}

// ---- engineer

function renderPermissions() {
  const type = $('ecuType').value;
  const entry = (me.ecuTypes || []).find((e) => e.ecuType === type);
  const fs = $('perms');
  fs.replaceChildren(el('legend', 'Permissions'));
  for (const p of entry ? entry.permissions : []) {
    const label = el('label');
    const box = el('input', undefined, { type: 'checkbox', value: p, name: 'perm' });
    box.checked = true;
    label.append(box, document.createTextNode(` ${p}`));
    fs.append(label);
  }
}

async function loadHistory() {
  const r = await api('GET', '/v1/tokens?limit=50');
  rows('history', r.items, (t) => [t.at, `${t.ecuType}/${t.uid}`, t.permissions, t.notAfter, t.tokenId]);
}

async function readChallengeFile(file) {
  const buf = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(buf).trim();
  // a hex text file, or the raw nonce bytes as the tester saved them
  if (/^[0-9a-fA-F\s]+$/.test(text) && text.replace(/\s/g, '').length % 2 === 0) return text.replace(/\s/g, '').toLowerCase();
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function requestToken(ev) {
  ev.preventDefault();
  const permissions = Array.from(document.querySelectorAll('input[name=perm]:checked'), (b) => b.value);
  const body = { ecuType: $('ecuType').value, uid: $('uid').value.trim().toLowerCase(), challenge: $('challenge').value.replace(/\s/g, '').toLowerCase() };
  if (permissions.length) body.permissions = permissions;
  if ($('lifetime').value) body.lifetimeSeconds = Number($('lifetime').value) * 60;
  const t = await api('POST', '/v1/tokens', body);
  lastToken = t;
  $('result').hidden = false;
  $('tokenId').textContent = t.tokenId;
  const dl = $('tokenFields');
  dl.replaceChildren();
  for (const [k, v] of [['ECU', `${t.ecuType} / ${t.uid}`], ['permissions', t.permissionNames.join(', ')], ['AUTOSAR role word', `0x${t.autosarRole.toString(16).padStart(8, '0')}`], ['valid', `${t.notBefore} … ${t.notAfter}`], ['signing key id', t.keyId], ['token (hex)', t.tokenHex]]) {
    dl.append(el('dt', k), el('dd', v));
  }
  await loadHistory();
}

function download() {
  if (!lastToken) return;
  const bytes = Uint8Array.from(atob(lastToken.token), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  const a = el('a', undefined, { href: url, download: `unlock-${lastToken.ecuType}-${lastToken.uid}-${lastToken.tokenId}.bin` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---- admin

async function loadAdmin() {
  const [reqs, users] = await Promise.all([api('GET', '/v1/admin/requests'), api('GET', '/v1/admin/users')]);
  rows('requests', reqs.items, (q) => [
    q.id,
    q.cn,
    q.role,
    q.state,
    `${q.approvals.length}/${q.approvalsNeeded} ${q.approvals.join(', ')}`,
    q.state === 'PENDING' ? el('span') : '',
  ]);
  // the buttons are added here, bound to their request, never through markup
  const tb = $('requests').querySelector('tbody');
  reqs.items.forEach((q, i) => {
    if (q.state !== 'PENDING') return;
    const cell = tb.children[i].lastChild;
    cell.replaceChildren(
      button('Approve', `approve-${q.cn}`, async () => {
        await api('POST', `/v1/admin/requests/${encodeURIComponent(q.id)}/approve`, {});
        await loadAdmin();
      }),
      button('Reject', `reject-${q.cn}`, async () => {
        await api('POST', `/v1/admin/requests/${encodeURIComponent(q.id)}/reject`, { reason: 'rejected on the console' });
        await loadAdmin();
      }),
    );
  });
  rows('users', users.items, (u) => [
    u.cn,
    u.role,
    u.state === 'ACTIVE' && Date.parse(u.expiresAt) <= Date.now() ? 'EXPIRED' : u.state,
    u.expiresAt,
    u.certs.filter((c) => !c.revoked).map((c) => c.serial).join(' '),
    u.state === 'ACTIVE'
      ? button('Revoke', `revoke-${u.cn}`, async () => {
          await api('POST', `/v1/admin/users/${encodeURIComponent(u.cn)}/revoke`, { reason: 'revoked on the console' });
          await loadAdmin();
        })
      : '',
  ]);
}

async function onboard(ev) {
  ev.preventDefault();
  await api('POST', '/v1/admin/requests', { cn: $('ob-cn').value.trim(), role: $('ob-role').value, accessSeconds: Number($('ob-days').value) * 86_400 });
  await loadAdmin();
}

async function certify(ev) {
  ev.preventDefault();
  const cn = $('cert-cn').value.trim();
  const csr = $('cert-csr').value.trim();
  const body = csr ? { csr } : { passphrase: $('cert-pass').value };
  const r = await api('POST', `/v1/admin/users/${encodeURIComponent(cn)}/certificate`, body);
  $('cert-out').textContent = `certificate ${r.serial} until ${r.notAfter}`;
  const data = r.pkcs12 ? Uint8Array.from(atob(r.pkcs12), (c) => c.charCodeAt(0)) : new TextEncoder().encode(r.certificate);
  const url = URL.createObjectURL(new Blob([data], { type: 'application/octet-stream' }));
  const a = el('a', r.pkcs12 ? `${cn}.p12` : `${cn}.crt`, { href: url, download: r.pkcs12 ? `${cn}.p12` : `${cn}.crt` });
  $('cert-out').append(' ', a);
  await loadAdmin();
}

async function searchLog(ev) {
  if (ev) ev.preventDefault();
  const q = new URLSearchParams({ limit: '200' });
  if ($('log-user').value.trim()) q.set('user', $('log-user').value.trim());
  if ($('log-ecu').value.trim()) q.set('ecu', $('log-ecu').value.trim().toLowerCase());
  if ($('log-since').value) q.set('since', new Date($('log-since').value).toISOString());
  const r = await api('GET', `/v1/admin/log?${q}`);
  rows('log', r.items, (e) => {
    const { seq, at, ev: what, cn, ...rest } = e;
    return [at, seq, what, cn, Object.entries(rest).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : v}`).join(' ')];
  });
}

// ---- start

async function start() {
  try {
    me = await api('GET', '/v1/me');
  } catch {
    $('who').textContent = 'Your certificate is not (or no longer) allowed here.';
    return;
  }
  csrf = me.csrf;
  $('who').textContent = `${me.cn}, ${me.role}, access until ${me.expiresAt}`;
  if (me.ecuTypes.some((e) => e.permissions.length)) {
    $('engineer').hidden = false;
    const sel = $('ecuType');
    for (const e of me.ecuTypes.filter((x) => x.permissions.length)) sel.append(el('option', e.ecuType, { value: e.ecuType }));
    sel.addEventListener('change', renderPermissions);
    renderPermissions();
    if (me.maxTokenSeconds) $('lifetime').max = String(Math.floor(me.maxTokenSeconds / 60));
    $('token-form').addEventListener('submit', (ev) => requestToken(ev).catch(() => {}));
    $('challengeFile').addEventListener('change', async () => {
      const f = $('challengeFile').files[0];
      if (f) $('challenge').value = await readChallengeFile(f);
    });
    $('download').addEventListener('click', download);
    await loadHistory().catch(() => {});
  }
  if (me.admin) {
    $('admin').hidden = false;
    for (const r of ['TESTING', 'AFTER_SALES', 'DEVELOPMENT', 'ADMIN']) $('ob-role').append(el('option', r, { value: r }));
    $('onboard-form').addEventListener('submit', (ev) => onboard(ev).catch(() => {}));
    $('cert-form').addEventListener('submit', (ev) => certify(ev).catch(() => {}));
    $('log-form').addEventListener('submit', (ev) => searchLog(ev).catch(() => {}));
    await loadAdmin().catch(() => {});
    await searchLog().catch(() => {});
  }
  document.body.dataset.ready = '1';
}

document.addEventListener('DOMContentLoaded', () => void start());
