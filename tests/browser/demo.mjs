// demo.mjs - drive lipsyncd's demo page in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core; no browser is downloaded).
//
//   node demo.mjs --url http://127.0.0.1:PORT/ --out DIR [--model demo] [--frames 12] [--batch 4]
//                 [--source features|speech]
//
// Opens the page, picks the model, plays, and writes to DIR:
//   canvas.rgba   the canvas pixels after the last frame (width*height*4)
//   request.bin   the gRPC-Web body (5-byte frame + CompositeBatchRequest, or
//                 RenderSpeechRequest for speech) of the call that frame came from
//   result.json   what was drawn (frame index, index in its batch, counts)
//   screenshot.png
// The caller (test_browser_demo.py) replays request.bin over native gRPC
// and compares the PNG it gets with canvas.rgba. Exit status 0 = the page
// played every frame without errors.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function args() {
  const a = { model: 'demo', frames: 12, batch: 4, source: 'features', chromium: '/usr/bin/chromium' };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
  if (!a.url || !a.out) throw new Error('usage: node demo.mjs --url URL --out DIR [--model ID] [--frames N] [--batch B]');
  return a;
}

async function main() {
  const a = args();
  fs.mkdirSync(a.out, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lsdemo-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: a.chromium,
    headless: true,
    viewport: { width: 1500, height: 1100 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required', '--mute-audio'],
  });
  const problems = [];
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));

    // Instrument drawImage on the page's canvas: after each frame drawn,
    // a checksum of the band through the avatar's face, so the test sees
    // that consecutive frames differ (the mouth follows the audio).
    await page.addInitScript(() => {
      window.__drawSums = [];
      const orig = CanvasRenderingContext2D.prototype.drawImage;
      CanvasRenderingContext2D.prototype.drawImage = function (...args) {
        const r = orig.apply(this, args);
        if (this.canvas.id === 'canvas') {
          const d = this.getImageData(0, 150, this.canvas.width, 450).data;
          let s = 0;
          for (let i = 0; i < d.length; i += 4) s += d[i] + 3 * d[i + 1] + 7 * d[i + 2];
          window.__drawSums.push(s);
        }
        return r;
      };
    });
    await page.goto(a.url);
    await page.waitForFunction((id) => window.lsDemo && window.lsDemo.ready &&
      [...document.querySelectorAll('#model option')].some((o) => o.value === id), a.model, { timeout: 30000 });
    await page.selectOption('#model', a.model);
    await page.selectOption('#source', a.source);
    await page.fill('#frames', String(a.frames));
    await page.fill('#batch', String(a.batch));
    await page.fill('#start', '0');
    await page.click('#play');

    await page.waitForFunction(() => window.lsDemo.state !== 'playing', null, { timeout: 240000, polling: 50 });
    const demo = await page.evaluate(() => ({
      state: window.lsDemo.state, framesDrawn: window.lsDemo.framesDrawn,
      lastDrawn: window.lsDemo.lastDrawn, errors: window.lsDemo.errors,
      source: window.lsDemo.source, totalFrames: window.lsDemo.totalFrames,
      audioStarted: window.lsDemo.audioStarted,
      status: document.getElementById('status').textContent,
      drawSums: window.__drawSums,
    }));
    if (demo.state !== 'done') throw new Error(`playback ended in state ${demo.state}: ${demo.status}`);

    // The canvas pixels and the request of the batch on screen, as base64.
    const dump = await page.evaluate(() => {
      const b64 = (u8) => {
        let s = '';
        for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
        return btoa(s);
      };
      const c = document.getElementById('canvas');
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height);
      return { width: c.width, height: c.height, pixels: b64(new Uint8Array(px.data.buffer)),
        request: b64(window.lsDemo.drawnBatchRequest) };
    });
    fs.writeFileSync(path.join(a.out, 'canvas.rgba'), Buffer.from(dump.pixels, 'base64'));
    fs.writeFileSync(path.join(a.out, 'request.bin'), Buffer.from(dump.request, 'base64'));
    await page.waitForTimeout(1200); // one stats poll after the last request
    await page.screenshot({ path: path.join(a.out, 'screenshot.png'), fullPage: true });
    const result = { ...demo, width: dump.width, height: dump.height,
      distinctCanvasSums: new Set(demo.drawSums).size, problems };
    fs.writeFileSync(path.join(a.out, 'result.json'), JSON.stringify(result, null, 2));
    console.log(JSON.stringify(result));
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
