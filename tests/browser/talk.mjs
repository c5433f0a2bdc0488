// talk.mjs - drive lipsyncd's Talk page (web/talk.html) in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core).
//
//   node talk.mjs --url http://127.0.0.1:PORT/talk.html?snap=10,60 --out DIR [--model demo]
//                 [--source speech|mic] [--wav FILE (mic: Chromium's fake capture device plays it)]
//
// Picks the model and the audio source, presses Start, waits for the page to
// finish, and writes DIR/result.json (the page's window.lsTalk: counts, the
// A/V log, the close code), DIR/sent.s16 (the audio the page sent),
// DIR/snap_<i>.rgba (the canvas right after frame i) and a screenshot.
// Exit status 0 = the page finished without errors.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function args() {
  const a = { model: 'demo', source: 'speech', chromium: '/usr/bin/chromium' };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
  if (!a.url || !a.out) throw new Error('usage: node talk.mjs --url URL --out DIR [--model ID] [--source S]');
  return a;
}

async function main() {
  const a = args();
  fs.mkdirSync(a.out, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lstalk-chromium-'));
  const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required', '--mute-audio'];
  if (a.wav) flags.push('--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${a.wav}`);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: a.chromium, headless: true, viewport: { width: 1500, height: 1000 }, args: flags,
  });
  const problems = [];
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    await page.goto(a.url);
    await page.waitForFunction((id) => window.lsTalk && window.lsTalk.ready &&
      [...document.querySelectorAll('#model option')].some((o) => o.value === id), a.model, { timeout: 30000 });
    await page.selectOption('#model', a.model);
    await page.selectOption('#source', a.source);
    await page.click('#start');
    await page.waitForFunction(() => window.lsTalk.state === 'done' || window.lsTalk.state === 'error', null,
      { timeout: 300000, polling: 100 });
    const t = await page.evaluate(() => {
      const x = window.lsTalk;
      return { state: x.state, codec: x.codec, framesReceived: x.framesReceived, framesDecoded: x.framesDecoded,
        framesDrawn: x.framesDrawn, late: x.late, dropped: x.dropped, bytes: x.bytes, decodeMs: x.decodeMs,
        latencyMs: x.latencyMs, av: x.av, ended: x.ended, closeCode: x.closeCode, closeReason: x.closeReason,
        audioStarted: x.audioStarted, errors: x.errors, status: document.getElementById('status').textContent,
        snapIndices: Object.keys(x.snapshots).map(Number), sent: x.sentBase64() };
    });
    fs.writeFileSync(path.join(a.out, 'sent.s16'), Buffer.from(t.sent, 'base64'));
    delete t.sent;
    for (const i of t.snapIndices) {
      const s = await page.evaluate((k) => window.lsTalk.snapshotBase64(k), i);
      fs.writeFileSync(path.join(a.out, `snap_${i}.rgba`), Buffer.from(s, 'base64'));
    }
    // The close frame follows the last message; give it a moment.
    await page.waitForFunction(() => window.lsTalk.closeCode !== null, null, { timeout: 10000 }).catch(() => {});
    t.closeCode = await page.evaluate(() => window.lsTalk.closeCode);
    await page.screenshot({ path: path.join(a.out, 'screenshot.png'), fullPage: true });
    t.problems = problems;
    fs.writeFileSync(path.join(a.out, 'result.json'), JSON.stringify(t, null, 1));
    if (t.state !== 'done') throw new Error(`the page ended in state ${t.state}: ${t.status}`);
    if (problems.length) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e && e.stack || e);
  process.exit(1);
});
