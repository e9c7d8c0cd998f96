// End-to-end: the OFFICIAL Flashphoner Web SDK demo pages (npm @flashphoner/websdk, served
// unchanged from the installed package on 127.0.0.1) against the real rtcdn binary (RTCDN_BIN),
// speaking the Flashphoner WebSocket signalling protocol on rtcdn's HTTP listener.
//   - Two Way Streaming: connect, publish, play (frames decoded), stop, unpublish.
//   - Embed Player: plays a stream published with the SDK or with WHIP.
//   - Cross-protocol: SDK publish -> WHEP play, WHIP publish -> SDK play.
//   - Errors as the demos show them: name in use, stream not found, publisher stopped.
// Every http(s) request to a host other than 127.0.0.1 is aborted (newLoopbackContext) and DNS
// is mapped to NOTFOUND (OFFLINE_CHROMIUM_ARGS), so nothing leaves the machine.
// Set RTCDN_SKIP_E2E=1 to skip these.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRtcdn, newLoopbackContext, openLoggedPage, frameLog, framesOf, waitForSdkVideo, waitForText,
  waitForState, waitForDecodedVideo, hookedVideoStats, TWO_WAY_PATH, EMBED_PLAYER_PATH, poll,
  e2eSkip, logTail, withBrowserAndPackages,
} from './harness.mjs';

const skip = e2eSkip();

let browser;
let pkg;
withBrowserAndPackages((b, p) => { browser = b; pkg = p; }, { skip });

/**
 * Runs body({server, context, pages, t}) with a fresh rtcdn and a loopback-only browser context.
 * On failure the error gets every page's signalling frames and console, the blocked requests
 * and the tail of rtcdn's log.
 */
async function withRtcdn(t, body) {
  const server = await startRtcdn();
  const context = await newLoopbackContext(browser);
  const pages = [];
  const firstRequest = pkg.requests.length;
  const origNewPage = context.newPage.bind(context);
  context.newPage = async () => { const p = await origNewPage(); pages.push(p); return p; };
  try {
    await body({ server, context });
    if (context.blocked.length) t.diagnostic(`blocked off-host requests: ${context.blocked.join(' ')}`);
    const missing = pkg.requests.slice(firstRequest).filter((r) => r.status !== 200).map((r) => r.path);
    if (missing.length) t.diagnostic(`not in the package (404): ${[...new Set(missing)].join(' ')}`);
  } catch (e) {
    let extra = '';
    for (const [i, p] of pages.entries()) {
      let where = '?';
      try { where = p.url(); } catch {}
      extra += `\n--- page ${i} ${where}: WebSocket frames ('>' sent by the page, '<' received) ---\n${frameLog(p)}`;
      extra += `\n--- page ${i} console ---\n${(p.consoleLines || []).slice(-60).join('\n')}`;
    }
    extra += `\n--- blocked off-host requests ---\n${context.blocked.join('\n')}`;
    extra += logTail(server, { lines: 150 });
    e.message += extra;
    throw e;
  } finally {
    await context.close().catch(() => {});
    const r = await server.stop();
    if (r && r.signal === 'SIGKILL') console.error('rtcdn did not exit within 3 s of SIGTERM');
  }
}

const wsUrl = (server) => `ws://127.0.0.1:${server.port}`;

/** Opens Two Way Streaming from the package, points it at rtcdn and connects: ESTABLISHED. */
async function openTwoWay(context, server) {
  const page = await openLoggedPage(context, pkg.url + TWO_WAY_PATH);
  // init_page() has run once the field holds its default (ws://127.0.0.1:8080).
  await waitForText(page, '#connectBtn', 'Connect');
  assert.match(await page.inputValue('#urlServer'), /^ws:\/\/127\.0\.0\.1:8080/, 'demo default URL');
  await page.fill('#urlServer', wsUrl(server));
  await page.click('#connectBtn');
  await waitForText(page, '#connectStatus', 'ESTABLISHED');
  return page;
}

/** Publishes `name` with Two Way Streaming (default: the demo's own random name). */
async function twoWayPublish(page, name) {
  if (name) await page.fill('#publishStream', name);
  await page.click('#publishBtn');
  await waitForText(page, '#publishStatus', 'PUBLISHING', { timeout: 20_000 });
  await waitForText(page, '#publishBtn', 'Stop');
  return page.inputValue('#publishStream');
}

/** Plays `name` with Two Way Streaming; waits for the given #playStatus. */
async function twoWayPlay(page, name, status = 'PLAYING') {
  if (name) await page.fill('#playStream', name);
  await page.click('#playBtn');
  return waitForText(page, '#playStatus', status, { timeout: 20_000 });
}

function embedUrl(server, name) {
  const q = new URLSearchParams({ urlServer: wsUrl(server), streamName: name, mediaProviders: 'WebRTC', autoplay: 'true' });
  return `${pkg.url}${EMBED_PLAYER_PATH}?${q}`;
}

/** The built-in WHIP/WHEP page of rtcdn, publishing or playing `name`. */
async function whipPublish(context, server, name) {
  const page = await openLoggedPage(context, `${server.url}/?stream=${encodeURIComponent(name)}&autostart=publish`);
  await waitForState(page, 'publishState', 'publishing', { timeout: 20_000 });
  return page;
}

/** The status object of the last notifyStreamStatusEvent a page received for status `status`. */
function lastStatusFrame(page, status) {
  return framesOf(page, 'notifyStreamStatusEvent').map((f) => f.data[0]).filter((d) => d && d.status === status).pop();
}

test('demo pages load from the package on 127.0.0.1; off-host requests are blocked (no server)', { timeout: 60_000 }, async (t) => {
  const context = await newLoopbackContext(browser);
  const first = pkg.requests.length;
  try {
    const page = await openLoggedPage(context, pkg.url + TWO_WAY_PATH);
    await waitForText(page, '#connectBtn', 'Connect');
    assert.equal(await page.inputValue('#urlServer'), 'ws://127.0.0.1:8080', 'default URL from utils.js');
    assert.match(await page.inputValue('#publishStream'), /^[0-9a-f]{4}$/);
    assert.equal(await page.evaluate(() => typeof Flashphoner.createSession), 'function');
    // The guard: a request to another host never leaves the browser.
    const r = await page.evaluate(() => fetch('http://cdn.example.com/x.js').then(() => 'loaded', (e) => `blocked: ${e}`));
    assert.match(r, /^blocked/);
    assert.ok(context.blocked.includes('http://cdn.example.com/x.js'), JSON.stringify(context.blocked));

    const player = await openLoggedPage(context, `${pkg.url}${EMBED_PLAYER_PATH}?streamName=x&mediaProviders=WebRTC&autoplay=false`);
    await poll(() => player.isVisible('#play'), { timeout: 5000, what: 'Embed Player central play button' });
    assert.equal(await player.textContent('#status'), '');
    assert.equal(await player.evaluate(() => Flashphoner.getMediaProviders()[0]), 'WebRTC');
    const missing = pkg.requests.slice(first).filter((q) => q.status !== 200).map((q) => q.path);
    assert.deepEqual(missing, [], 'every file the pages ask for is in the package');
    for (const p of [page, player]) {
      assert.deepEqual(p.consoleLines.filter((l) => l.startsWith('[pageerror]')), [], 'no page errors');
    }
  } finally { await context.close(); }
});

test('Two Way Streaming: connect, publish, play (frames decoded), stop, unpublish, disconnect', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    const page = await openTwoWay(context, server);
    const connection = framesOf(page, 'connection', '>')[0];
    assert.ok(connection, 'the SDK sent connection');
    const userData = framesOf(page, 'getUserData')[0];
    assert.ok(userData && typeof userData.data[0] === 'object', 'getUserData with an object');

    // The demo fills both fields with the same random name; use it as a user would.
    const name = await page.inputValue('#publishStream');
    assert.equal(await page.inputValue('#playStream'), name);
    await twoWayPublish(page);
    const pubReq = framesOf(page, 'publishStream', '>')[0].data[0];
    const answer = framesOf(page, 'setRemoteSDP').find((f) => f.data[0] === pubReq.mediaSessionId);
    assert.ok(answer, 'setRemoteSDP for the publisher');
    assert.match(answer.data[1], /a=candidate:/, 'answer carries its own candidates');

    await twoWayPlay(page);
    const st = await waitForSdkVideo(page, { minFrames: 60 });
    t.diagnostic(`player decoded: ${JSON.stringify(st)}`);
    assert.ok(st.videoWidth > 0 && st.framesDecoded >= 60);
    const sent = await hookedVideoStats(page, 'outbound-rtp');
    t.diagnostic(`publisher sent: ${JSON.stringify(sent)}`);
    const audio = await page.evaluate(async () => {
      let n = 0;
      for (const pc of window.__pcs) {
        if (pc.connectionState === 'closed') continue;
        (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived || 0; });
      }
      return n;
    });
    t.diagnostic(`player audio packets received: ${audio}`);
    assert.ok(audio > 0, 'the player receives audio too');
    await page.screenshot({ path: '/tmp/rtcdn-e2e-flashphoner-two-way.png' });

    // "Send payload as object": the publisher's stream event reaches the player (receivedData).
    await page.click('#sendDataBtn');
    await waitForText(page, '#receivedData', /\{"count":23\}/);
    // "Available" for the live name.
    await page.click('#availableBtn');
    await waitForText(page, '#availableStatus', 'AVAILABLE');

    await page.click('#playBtn'); // "Stop"
    await waitForText(page, '#playStatus', 'STOPPED');
    await waitForText(page, '#playBtn', 'Play');
    await page.click('#publishBtn'); // "Stop"
    await waitForText(page, '#publishStatus', 'UNPUBLISHED');
    await waitForText(page, '#publishBtn', 'Publish');
    // Nothing failed on the way.
    assert.equal(await page.textContent('#playInfo'), '');
    assert.equal(await page.textContent('#publishInfo'), '');
    // The stream is gone on the server: playing it now is refused.
    await twoWayPlay(page, name, 'FAILED');
    assert.equal(await page.textContent('#playInfo'), 'Other: Stream not found');

    await page.click('#connectBtn'); // "Disconnect"
    await waitForText(page, '#connectStatus', 'DISCONNECTED');
  });
});

test('Embed Player plays a stream published with Two Way Streaming', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    const pub = await openTwoWay(context, server);
    const name = await twoWayPublish(pub, 'sdkpub1');
    const player = await openLoggedPage(context, embedUrl(server, name));
    const st = await waitForSdkVideo(player, { minFrames: 60 });
    t.diagnostic(`embed player decoded: ${JSON.stringify(st)}`);
    assert.equal(await player.textContent('#status'), '', 'no FAILED/DISCONNECTED on the player');
    const playReq = framesOf(player, 'playStream', '>')[0].data[0];
    assert.equal(playReq.name, name);
    assert.equal(lastStatusFrame(player, 'PLAYING')?.mediaSessionId, playReq.mediaSessionId);
    await player.screenshot({ path: '/tmp/rtcdn-e2e-flashphoner-embed.png' });

    // Pausing the <video> (the player's own control) stops the stream: stopStream -> STOPPED,
    // and the central Play button comes back.
    await player.evaluate(() => document.querySelector('#remoteVideo video').pause());
    await waitForText(player, '#status', '');
    await poll(() => lastStatusFrame(player, 'STOPPED'), { timeout: 10_000, what: 'STOPPED for the embed player' });
    assert.equal(lastStatusFrame(player, 'STOPPED').mediaSessionId, playReq.mediaSessionId);
    await poll(() => player.isVisible('#play'), { timeout: 5000, what: 'central play button visible' });
    // The publisher is untouched.
    assert.equal(await pub.textContent('#publishStatus'), 'PUBLISHING');
  });
});

test('WHIP publish -> Embed Player plays it', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    await whipPublish(context, server, 'whip1');
    const player = await openLoggedPage(context, embedUrl(server, 'whip1'));
    const st = await waitForSdkVideo(player, { minFrames: 60 });
    t.diagnostic(`embed player decoded: ${JSON.stringify(st)}`);
    assert.equal(await player.textContent('#status'), '');
  });
});

test('Two Way Streaming publish -> WHEP play (built-in page) decodes frames', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    const pub = await openTwoWay(context, server);
    await twoWayPublish(pub, 'sdk2whep');
    const play = await openLoggedPage(context, `${server.url}/?stream=sdk2whep&autostart=play`);
    await waitForState(play, 'playState', 'playing', { timeout: 20_000 });
    const st = await waitForDecodedVideo(play, { minFrames: 60, timeout: 30_000 });
    t.diagnostic(`WHEP player decoded: ${JSON.stringify(st)}`);
    assert.ok(st.videoWidth > 0);

    // SDK unpublish ends the WHEP player too.
    await pub.click('#publishBtn');
    await waitForText(pub, '#publishStatus', 'UNPUBLISHED');
    const how = await waitForState(play, 'playState', ['ended', 'error'], { timeout: 15_000 });
    t.diagnostic(`WHEP player after SDK unpublish: ${how} (${await play.textContent('#play-reason')})`);
  });
});

test('WHIP publish -> Two Way Streaming play decodes frames; WHIP stop -> player FAILED', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    const whip = await whipPublish(context, server, 'whip2sdk');
    const page = await openTwoWay(context, server);
    await twoWayPlay(page, 'whip2sdk');
    const st = await waitForSdkVideo(page, { minFrames: 60 });
    t.diagnostic(`SDK player decoded: ${JSON.stringify(st)}`);

    await whip.click('#publish-stop');
    await waitForState(whip, 'publishState', 'stopped');
    await waitForText(page, '#playStatus', 'FAILED');
    assert.equal(await page.textContent('#playInfo'), 'Related publisher stopped its stream or lost connection');
    assert.equal(lastStatusFrame(page, 'FAILED')?.info, 'Stopped by publisher stop');
  });
});

test('errors: publishing a name already live -> FAILED "Stream name is already in use"', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    const first = await openTwoWay(context, server);
    await twoWayPublish(first, 'taken');
    const second = await openTwoWay(context, server);
    await second.fill('#publishStream', 'taken');
    await second.click('#publishBtn');
    await waitForText(second, '#publishStatus', 'FAILED', { timeout: 20_000 });
    assert.equal(await second.textContent('#publishInfo'),
      'Server already has a publish stream with the same name, try using different one');
    assert.equal(lastStatusFrame(second, 'FAILED')?.info, 'Stream name is already in use');
    await waitForText(second, '#publishBtn', 'Publish');
    // The first publisher is untouched.
    assert.equal(await first.textContent('#publishStatus'), 'PUBLISHING');

    // A name taken by a WHIP publisher is refused the same way.
    await whipPublish(context, server, 'takenwhip');
    await second.fill('#publishStream', 'takenwhip');
    await second.click('#publishBtn');
    await waitForText(second, '#publishInfo', 'Server already has a publish stream with the same name, try using different one', { timeout: 20_000 });
    assert.equal(await second.textContent('#publishStatus'), 'FAILED');
  });
});

test('errors: playing an unknown name -> FAILED "Stream not found" (Two Way Streaming and Embed Player)', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    const page = await openTwoWay(context, server);
    await twoWayPlay(page, 'nosuch', 'FAILED');
    assert.equal(await page.textContent('#playInfo'), 'Other: Stream not found');
    assert.equal(lastStatusFrame(page, 'FAILED')?.info, 'Stream not found');
    await waitForText(page, '#playBtn', 'Play');
    await page.click('#availableBtn');
    await waitForText(page, '#availableStatus', 'UNAVAILABLE');

    const player = await openLoggedPage(context, embedUrl(server, 'nosuch2'));
    await waitForText(player, '#status', 'FAILED: Stream not found', { timeout: 20_000 });
  });
});

test('errors: publisher stops while players play -> players FAILED "Stopped by publisher stop"', { skip, timeout: 120_000 }, async (t) => {
  await withRtcdn(t, async ({ server, context }) => {
    const pub = await openTwoWay(context, server);
    await twoWayPublish(pub, 'leaving');
    const player = await openTwoWay(context, server);
    await twoWayPlay(player, 'leaving');
    const embed = await openLoggedPage(context, embedUrl(server, 'leaving'));
    await waitForSdkVideo(player, { minFrames: 30 });
    await waitForSdkVideo(embed, { minFrames: 30 });

    await pub.click('#publishBtn'); // "Stop"
    await waitForText(pub, '#publishStatus', 'UNPUBLISHED');
    await waitForText(player, '#playStatus', 'FAILED');
    assert.equal(await player.textContent('#playInfo'), 'Related publisher stopped its stream or lost connection');
    assert.equal(lastStatusFrame(player, 'FAILED')?.info, 'Stopped by publisher stop');
    await waitForText(embed, '#status', 'FAILED: Stopped by publisher stop');

    // Same when the publisher's page just goes away (its WebSocket closes, no unPublishStream).
    await twoWayPublish(pub, 'vanishing');
    await twoWayPlay(player, 'vanishing');
    await waitForSdkVideo(player, { minFrames: 30 });
    await pub.close();
    await waitForText(player, '#playStatus', 'FAILED');
    assert.equal(await player.textContent('#playInfo'), 'Related publisher stopped its stream or lost connection');
  });
});
