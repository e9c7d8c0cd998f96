// End-to-end: the real rtcdn binary (RTCDN_BIN) + headless Chromium running the built-in page.
// Set RTCDN_SKIP_E2E=1 to skip these (e.g. while the server is still a stub).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRtcdn, launchChromium, openPage, startStaticServer, waitForState, waitForDecodedVideo, poll, e2eSkip, logTail,
} from './harness.mjs';

const skip = e2eSkip();

let browser;
before(async () => { if (!skip) browser = await launchChromium(); });
after(async () => { await browser?.close(); });

/** Runs body(server) with a fresh rtcdn; on failure the server's logs are appended to the error. */
async function withRtcdn(body, opts) {
  const server = await startRtcdn(opts);
  try {
    await body(server);
  } catch (e) {
    e.message += logTail(server, { lines: 200 });
    throw e;
  } finally {
    const r = await server.stop();
    if (r && r.signal === 'SIGKILL') console.error('rtcdn did not exit within 3 s of SIGTERM');
  }
}

for (const codec of ['VP8', 'H264', 'VP9', 'AV1']) {
  test(`WHIP publish -> WHEP play, ${codec}: frames decoded, then the stream ends`, { skip, timeout: 120_000 }, async (t) => {
    await withRtcdn(async (server) => {
      const stream = `t-${codec}`;
      const pub = await openPage(browser, `${server.url}/?stream=${stream}&codec=${codec}&autostart=publish`);
      const play = await openPage(browser);
      try {
        await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
        const pubLoc = await pub.evaluate(() => window.rtcdn.publishLocation);
        assert.match(pubLoc, new RegExp(`/whip/${stream}/[^/]+$`), 'WHIP Location header');

        await play.goto(`${server.url}/?stream=${stream}&autostart=play`);
        await waitForState(play, 'playState', 'playing', { timeout: 20_000 });
        const playLoc = await play.evaluate(() => window.rtcdn.playLocation);
        assert.match(playLoc, new RegExp(`/whep/${stream}/[^/]+$`), 'WHEP Location header');
        const st = await waitForDecodedVideo(play, { minFrames: 60, timeout: 30_000 });
        t.diagnostic(`decoded: ${JSON.stringify(st)}`);
        assert.equal(st.mimeType.toLowerCase(), `video/${codec.toLowerCase()}`);
        assert.ok(st.videoWidth > 0 && st.frameWidth > 0);
        // The node read the picture size from the publisher's keyframes (VP8 frame header, H.264
        // SPS, VP9 scalability structure, AV1 sequence header): the control API shows it, in the
        // proportions the player decodes.
        const listed = (await (await fetch(`${server.url}/api/streams`)).json()).find((x) => x.name === stream);
        t.diagnostic(`/api/streams: ${listed.width}x${listed.height}, ${listed.bitrate_bps} bit/s`);
        assert.ok(listed.width > 0 && listed.height > 0, `a size in /api/streams: ${JSON.stringify(listed)}`);
        assert.ok(Math.abs(listed.width / listed.height - st.frameWidth / st.frameHeight) < 0.05, 'the decoded proportions');
        await play.screenshot({ path: `/tmp/rtcdn-e2e-${codec}.png` });

        // Publisher leaves (DELETE on its Location): the server must end its players. The page
        // deletes its resource before it closes the peer connection, so the node ends the
        // session as asked and the DELETE finds it (no 404 in the log).
        await pub.evaluate(() => {
          const order = window.__stopOrder = [];
          const fetch0 = window.fetch;
          window.fetch = (url, init) => {
            if (init && init.method === 'DELETE') order.push('DELETE');
            return fetch0(url, init).then((res) => { if (init && init.method === 'DELETE') order.push(`DELETE ${res.status}`); return res; });
          };
          const close0 = RTCPeerConnection.prototype.close;
          RTCPeerConnection.prototype.close = function close() { order.push('close'); return close0.call(this); };
        });
        const t0 = Date.now();
        await pub.click('#publish-stop');
        await waitForState(pub, 'publishState', 'stopped');
        assert.deepEqual(await pub.evaluate(() => window.__stopOrder), ['DELETE', 'DELETE 200', 'close'], 'DELETE answered before the peer connection closes');
        let how;
        try {
          how = await waitForState(play, 'playState', ['ended', 'error'], { timeout: 15_000 });
          how = `playState=${how}`;
        } catch (e) {
          // Fallback: the player's WHEP resource must be gone.
          const res = await fetch(playLoc, { method: 'DELETE' });
          assert.equal(res.status, 404, `player neither ended nor was its WHEP resource removed:\n${e.message}`);
          how = 'WHEP resource DELETE answered 404';
        }
        if (how === 'playState=ended') {
          // The player's page says why, in words, and shows no frozen frame or stale numbers.
          const reason = await poll(async () => {
            const text = await play.textContent('#play-reason');
            return text !== '…' && text;
          }, { timeout: 5_000, what: 'the end reason' });
          assert.equal(reason, 'the publisher stopped the stream');
          assert.equal(await play.evaluate(() => document.getElementById('play-video').srcObject), null);
          assert.equal(await play.textContent('#play-stats'), '');
          how += ` (${reason})`;
        }
        t.diagnostic(`player saw the end after ${Date.now() - t0} ms: ${how}`);
        const refused = server.logText().split('\n').filter((l) => /request refused/.test(l) && /DELETE/.test(l));
        assert.deepEqual(refused, [], 'a normal stop logs no refused DELETE');
      } finally {
        await pub.close();
        await play.close();
      }
    });
  });
}

test('WHEP on an unknown stream: page shows HTTP 404 and the reason', { skip, timeout: 60_000 }, async () => {
  await withRtcdn(async (server) => {
    const page = await openPage(browser, `${server.url}/?stream=no-such-stream&autostart=play`);
    try {
      await waitForState(page, 'playState', 'error');
      const err = await page.evaluate(() => window.rtcdn.lastError);
      assert.match(err, /HTTP 404/);
      assert.match(await page.textContent('#play-reason'), /404/);
    } finally { await page.close(); }
  });
});

test('CORS: the page served from another origin publishes (Location exposed) and sees a 404', { skip, timeout: 60_000 }, async () => {
  await withRtcdn(async (server) => {
    const other = await startStaticServer();
    const pub = await openPage(browser, `${other.url}/?server=${encodeURIComponent(server.url)}&stream=cors&autostart=publish`);
    const play = await openPage(browser, `${other.url}/?server=${encodeURIComponent(server.url)}&stream=cors-missing&autostart=play`);
    try {
      await waitForState(play, 'playState', 'error');
      assert.match(await play.evaluate(() => window.rtcdn.lastError), /HTTP 404/, 'cross-origin fetch must be able to read the status');
      await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
      const loc = await pub.evaluate(() => window.rtcdn.publishLocation);
      assert.ok(loc && loc.startsWith(server.url + '/whip/cors/'), `Location not readable cross-origin: ${loc}`);
      await pub.click('#publish-stop');
      await waitForState(pub, 'publishState', 'stopped');
      // The DELETE above was cross-origin too; the resource must be gone now.
      await poll(async () => (await fetch(loc, { method: 'DELETE' })).status === 404,
        { timeout: 5000, what: 'WHIP resource deleted by the page' });
    } finally { await pub.close(); await play.close(); await other.close(); }
  });
});

test('the page at 1280 px: each panel\'s buttons share the row of its fields; devices and a token field', { skip, timeout: 60_000 }, async () => {
  await withRtcdn(async (server) => {
    const page = await openPage(browser);
    try {
      await page.setViewportSize({ width: 1280, height: 800 });
      await page.goto(`${server.url}/`);
      const top = async (sel) => (await page.locator(sel).boundingBox()).y;
      for (const kind of ['publish', 'play']) {
        const row = await top(`#${kind}-stream`);
        for (const sel of [`#${kind}-start`, `#${kind}-stop`]) {
          assert.ok(Math.abs((await top(sel)) - row) < 40, `${sel} on the row of #${kind}-stream`);
        }
      }
      assert.ok(Math.abs((await top('#play-cdn')) - (await top('#play-stop'))) < 40, 'the CDN checkbox on the row of Stop');
      // The fake devices are listed once the page may use them (after a publish).
      await page.click('#publish-start');
      await waitForState(page, 'publishState', 'publishing', { timeout: 20_000 });
      const cameras = await page.locator('#publish-camera option').count();
      const mics = await page.locator('#publish-mic option').count();
      assert.ok(cameras >= 2 && mics >= 2, `default plus the fake devices: ${cameras} cameras, ${mics} microphones`);
      assert.equal(await page.getAttribute('#token', 'type'), 'password');
      await page.screenshot({ path: '/tmp/rtcdn-page-1280.png' });
      await page.click('#publish-stop');
      await waitForState(page, 'publishState', 'stopped');
    } finally {
      await page.close();
    }
  });
});
