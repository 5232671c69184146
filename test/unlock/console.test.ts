// The web console in a real browser: Debian's chromium, headless, driven by puppeteer-core,
// presenting a client certificate. What makes that work (and --ignore-certificate-errors does
// not): each browser gets a temp HOME whose NSS database ($HOME/.pki/nssdb, certutil/pk12util
// from libnss3-tools) holds the user's PKCS#12 and trusts the server's CA, and the
// AutoSelectCertificateForUrls policy picks that certificate without a dialog. Chromium reads
// policies only from /etc/chromium/policies, so the browser runs in a private mount namespace
// (unshare -m) where a temp dir is bind-mounted over /etc/chromium: the host is not touched.
// An admin onboards, approves and certifies an engineer on the console; the engineer requests a
// token for a simulated ECU's challenge and downloads it; the ECU unlocks with it; the admin
// searches the log and revokes. Screenshots: test-output/unlock-console/ (or $PKS_TEST_OUT).
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { ROOT, waitFor } from '../../scripts/plant/process.js';
import { startUnlock, type UnlockHandle } from '../../scripts/plant/unlock.js';
import { UnlockEcu, challengeOf, challengeRequest, nrcOf, proofRequest } from '../../scripts/plant/ecu-unlock.js';
import { PERMISSION_BITS } from '../../appliance/unlock-permissions.js';
import { CSP } from '../../services/unlock/app.js';
import type { UnlockRequest } from '../../appliance/contracts/unlock.js';

const run = promisify(execFile);
const CHROMIUM = '/usr/bin/chromium';
const OUT = path.join(process.env.PKS_TEST_OUT ?? path.join(ROOT, 'test-output'), 'unlock-console');
const can = existsSync(CHROMIUM) && spawnSync('certutil', ['-H'], { stdio: 'ignore' }).error === undefined && process.getuid?.() === 0;
if (!can) console.log('SKIP console: needs root, /usr/bin/chromium and certutil/pk12util (scripts/deps.sh test: chromium libnss3-tools)');

let box: Box;
let svc: UnlockHandle;
let tmp: string;
const browsers: Browser[] = [];
const UID = '5e1f0a0b0c0d0e0f101112131415ff';

/** A headless chromium whose NSS database holds this PKCS#12 and trusts the server CA. */
async function browserFor(name: string, p12File: string, passphrase: string): Promise<{ browser: Browser; page: Page; downloads: string }> {
  const home = path.join(tmp, `home-${name}`);
  const nss = path.join(home, '.pki', 'nssdb');
  await mkdir(nss, { recursive: true });
  await run('certutil', ['-N', '-d', `sql:${nss}`, '--empty-password']);
  await run('pk12util', ['-i', p12File, '-d', `sql:${nss}`, '-W', passphrase]);
  await run('certutil', ['-A', '-d', `sql:${nss}`, '-n', 'pks-box-ca', '-t', 'C,,', '-i', svc.serverCaFile]);
  const etc = path.join(tmp, `etc-${name}`);
  await mkdir(path.join(etc, 'policies', 'managed'), { recursive: true });
  await writeFile(path.join(etc, 'policies', 'managed', 'pks-test.json'), JSON.stringify({ AutoSelectCertificateForUrls: [JSON.stringify({ pattern: svc.url, filter: {} })] }));
  const wrapper = path.join(tmp, `chromium-${name}.sh`);
  await writeFile(wrapper, `#!/bin/sh\nexec unshare -m /bin/sh -c 'mount --bind "$0" /etc/chromium && exec ${CHROMIUM} "$@"' "${etc}" "$@"\n`);
  await chmod(wrapper, 0o755);
  const browser = await puppeteer.launch({
    executablePath: wrapper,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', `--user-data-dir=${path.join(home, 'profile')}`],
    env: { ...process.env, HOME: home },
  });
  browsers.push(browser);
  const page = await browser.newPage();
  const downloads = path.join(tmp, `downloads-${name}`);
  await mkdir(downloads, { recursive: true });
  const cdp = await page.createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });
  return { browser, page, downloads };
}

const shot = (page: Page, name: string) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });
const downloaded = (dir: string, re: RegExp) => waitFor(`download ${re}`, async () => (await readdir(dir)).find((f) => re.test(f) && !f.endsWith('.crdownload')), 15_000, 100);
const ready = (page: Page) => page.waitForSelector('body[data-ready="1"]', { timeout: 15_000 });

(can ? test.before : () => {})(async () => {
  await mkdir(OUT, { recursive: true });
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-console-'));
  box = await startBox({ pools: [] });
  svc = await startUnlock({ dir: path.join(box.base, 'unlock'), runDir: box.runDir, logDir: box.logDir, boxId: box.boxId });
});
(can ? test.after : () => {})(async () => {
  for (const b of browsers) await b.close().catch(() => {});
  await svc?.stop();
  await box?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

(can ? test : test.skip)('console: admin onboards and certifies an engineer; the engineer gets, downloads and uses a token; strict CSP, CSRF refused, revocation at once', async () => {
  // the first admin: two people at the box (four eyes), a PKCS#12 made for her
  const req = await svc.admin.call<UnlockRequest>('onboard', { cn: 'adm-ada', role: 'ADMIN', accessSeconds: 86_400, as: 'it-1' });
  await svc.admin.call('approve', { id: req.id, as: 'it-2' });
  await svc.admin.call('approve', { id: req.id, as: 'it-3' });
  const adaP12 = await svc.admin.call<{ pkcs12: string }>('certificate', { cn: 'adm-ada', passphrase: 'ada-secret-1' });
  const adaFile = path.join(tmp, 'ada.p12');
  await writeFile(adaFile, Buffer.from(adaP12.pkcs12, 'base64'));

  const admin = await browserFor('ada', adaFile, 'ada-secret-1');
  const resp = await admin.page.goto(`${svc.url}/`, { waitUntil: 'domcontentloaded' });
  assert.is(resp?.status(), 200);
  assert.is(resp?.headers()['content-security-policy'], CSP);
  await ready(admin.page);
  assert.match(await admin.page.$eval('#who', (e) => e.textContent ?? ''), 'adm-ada, ADMIN');
  // no inline script runs under this CSP, even one the page itself would insert
  const injected = await admin.page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__pwned = 1';
    document.body.append(s);
    return (window as unknown as { __pwned?: number }).__pwned ?? 0;
  });
  assert.is(injected, 0, 'inline script ran');

  // onboard the engineer (AFTER_SALES: one approval) and approve her on the console
  await admin.page.type('#ob-cn', 'eng-egon');
  await admin.page.select('#ob-role', 'AFTER_SALES');
  await admin.page.click('#onboard');
  await admin.page.waitForSelector('button.approve-eng-egon');
  await shot(admin.page, '1-admin-request');
  await admin.page.click('button.approve-eng-egon');
  await admin.page.waitForSelector('button.revoke-eng-egon');
  // her PKCS#12, made on the box and downloaded from the console
  await admin.page.type('#cert-cn', 'eng-egon');
  await admin.page.type('#cert-pass', 'egon-secret-1');
  await admin.page.click('#certify');
  await admin.page.waitForSelector('#cert-out a');
  await admin.page.click('#cert-out a');
  const p12 = path.join(admin.downloads, await downloaded(admin.downloads, /^eng-egon\.p12$/));
  await shot(admin.page, '2-admin-users');

  // the engineer, with that PKCS#12 in her browser
  const eng = await browserFor('egon', p12, 'egon-secret-1');
  await eng.page.goto(`${svc.url}/`, { waitUntil: 'domcontentloaded' });
  await ready(eng.page);
  assert.match(await eng.page.$eval('#who', (e) => e.textContent ?? ''), 'eng-egon, AFTER_SALES');
  assert.ok(await eng.page.$eval('#admin', (e) => (e as HTMLElement).hidden), 'no admin section for an engineer');
  const keys = await svc.admin.call<{ items: { spki: string }[] }>('public-keys');
  const ecu = new UnlockEcu('bcm', Buffer.from(UID, 'hex'), [Buffer.from(keys.items[0]!.spki, 'base64')]);
  const challenge = challengeOf(ecu.handle(challengeRequest()));
  await eng.page.select('#ecuType', 'bcm');
  await eng.page.type('#uid', UID);
  // the challenge as the tester saved it: a file with the raw nonce
  const chFile = path.join(tmp, 'challenge.bin');
  await writeFile(chFile, challenge);
  const input = await eng.page.$('#challengeFile');
  await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(chFile);
  await eng.page.waitForFunction((hex) => (document.getElementById('challenge') as HTMLTextAreaElement).value === hex, {}, challenge.toString('hex'));
  await eng.page.click('#request');
  await eng.page.waitForSelector('#result:not([hidden])');
  await eng.page.waitForSelector('#history tbody tr');
  await shot(eng.page, '3-engineer-token');
  await eng.page.click('#download');
  const tokenFile = path.join(eng.downloads, await downloaded(eng.downloads, /^unlock-bcm-.*\.bin$/));
  const token = await readFile(tokenFile);
  assert.is(nrcOf(ecu.handle(proofRequest(token))), null, JSON.stringify(ecu.lastRefusal));
  assert.ok(ecu.can(PERMISSION_BITS.FIELD_RETURN_ANALYSIS));

  // CSRF: the same browser, the same certificate, a request without the console's proof
  const forged = await eng.page.evaluate(async (uid) => {
    const r = await fetch('/v1/tokens', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ecuType: 'bcm', uid, challenge: '00'.repeat(32) }) });
    return (await r.json()) as { code: string };
  }, UID);
  assert.is(forged.code, 'PKS_UNLOCK_CSRF');
  const textPlain = await eng.page.evaluate(async () => (await (await fetch('/v1/tokens', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' })).json()) as { code: string });
  assert.is(textPlain.code, 'PKS_UNLOCK_CSRF');

  // the admin searches the log for her, then revokes her; her next request is refused
  await admin.page.type('#log-user', 'eng-egon');
  await admin.page.click('#search');
  await admin.page.waitForFunction(() => Array.from(document.querySelectorAll('#log tbody tr td:nth-child(3)')).some((td) => td.textContent === 'grant'));
  await shot(admin.page, '4-admin-log');
  await admin.page.click('button.revoke-eng-egon');
  await admin.page.waitForFunction(() => !document.querySelector('button.revoke-eng-egon'));
  await eng.page.reload({ waitUntil: 'domcontentloaded' });
  await eng.page.waitForFunction(() => /no longer/.test(document.getElementById('who')?.textContent ?? ''));
  assert.is(await eng.page.$eval('#error', (e) => (e as HTMLElement).dataset.code), 'PKS_UNLOCK_REVOKED');
  await shot(eng.page, '5-engineer-revoked');
  console.log(`screenshots in ${OUT}`);
});

test.run();
