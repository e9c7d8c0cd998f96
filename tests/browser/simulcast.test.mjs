// Simulcast passthrough end to end: headless Chromium publishes over WHIP with three
// sendEncodings (l, m, h: scaleResolutionDownBy 4, 2, 1) from the built-in page
// (?simulcast=1); one WHEP player pins ?layer=l, another takes the default (the highest layer
// the publisher sends). Both decode frames, and the pinned one's are smaller.
// Set RTCDN_SKIP_E2E=1 to skip.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRtcdn, launchChromium, openPage, waitForState, waitForDecodedVideo, videoStats, poll, e2eSkip, logTail,
} from './harness.mjs';

const skip = e2eSkip();

let browser;
before(async () => { if (!skip) browser = await launchChromium(); });
after(async () => { await browser?.close(); });

test('WHIP simulcast publish: a player pinned to l gets smaller frames than the default player', { skip, timeout: 120_000 }, async (t) => {
  const server = await startRtcdn();
  const pages = [];
  try {
    const pub = await openPage(browser, `${server.url}/?stream=sim&simulcast=1&autostart=publish`);
    pages.push(pub);
    await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
    const offer = await pub.evaluate(() => window.rtcdn.publishPc.localDescription.sdp);
    assert.match(offer, /a=simulcast:send l;m;h/, 'the page offers three layers');
    const answer = await pub.evaluate(() => window.rtcdn.publishPc.remoteDescription.sdp);
    assert.match(answer, /a=simulcast:recv l;m;h/, 'rtcdn takes the three layers');

    const low = await openPage(browser, `${server.url}/?stream=sim&layer=l&autostart=play`);
    const high = await openPage(browser, `${server.url}/?stream=sim&autostart=play`);
    pages.push(low, high);
    for (const page of [low, high]) await waitForState(page, 'playState', 'playing', { timeout: 20_000 });
    const lowStats = await waitForDecodedVideo(low, { minFrames: 30, timeout: 30_000 });
    await waitForDecodedVideo(high, { minFrames: 30, timeout: 30_000 });
    t.diagnostic(`pinned l: ${JSON.stringify(lowStats)}`);
    // Chromium turns its upper layers on as its estimate grows: the default player follows.
    const highStats = await poll(async () => {
      const s = await videoStats(high);
      const l = await videoStats(low);
      return s && l && s.frameWidth > l.frameWidth ? { high: s, low: l } : false;
    }, { timeout: 40_000, interval: 500, what: 'the default player gets larger frames than the pinned one' });
    t.diagnostic(`default vs pinned: ${JSON.stringify(highStats)}`);
    assert.ok(highStats.low.frameWidth <= 1280 / 4 + 16, `pinned to l: ${highStats.low.frameWidth} px wide`);
  } catch (e) {
    e.message += logTail(server, { lines: 100 });
    throw e;
  } finally {
    for (const page of pages) await page.close();
    await server.stop();
  }
});
