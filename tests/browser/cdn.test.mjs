// End-to-end CDN 1.0 (origin + edge), as a WCS user runs it: two rtcdn processes started with
// the shipped configs (`rtcdn --config config/origin.toml`, `rtcdn --config config/edge.toml`,
// fixed ports 8080 and 8180), Chromium publishing to the origin with the OFFICIAL Flashphoner Web
// SDK demo page, and players on the edge:
//   A. Embed Player (SDK demo, unchanged) with urlServer = the edge;
//   B. a minimal SDK page using createSession({urlServer: origin, lbUrl: origin/lb}): the SDK asks
//      the origin's balancer and opens its WebSocket to the edge;
//   C. rtcdn's built-in page playing over WHEP via the CDN: with cdn=1 (asks /lb, plays from the
//      edge) and without (the origin answers WHEP with 307 to the edge).
// Then the publisher stops: every edge player fails with "Stopped by publisher stop".
// A second test publishes simulcast (the built-in page's ?simulcast=1: l, m, h) to the origin:
// every layer crosses to the edge, where a WHEP player pinned to ?layer=l gets smaller frames
// than a default one.
// Only 127.0.0.1 is ever contacted (newLoopbackContext, OFFLINE_CHROMIUM_ARGS).
// Set RTCDN_SKIP_E2E=1 to skip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRtcdnWithConfig, newLoopbackContext, openLoggedPage, frameLog, framesOf, waitForSdkVideo,
  waitForText, waitForState, waitForDecodedVideo, TWO_WAY_PATH, EMBED_PLAYER_PATH, LB_PAGE_PATH,
  LB_PAGE, poll, sleep, videoStats, e2eSkip, withBrowserAndPackages,
} from './harness.mjs';

const skip = e2eSkip();

const ORIGIN_WS = 'ws://127.0.0.1:8080';
const ORIGIN_HTTP = 'http://127.0.0.1:8080';
const EDGE_WS = 'ws://127.0.0.1:8180';
const EDGE_HTTP = 'http://127.0.0.1:8180';
/** How long the edge may take to get a stream after the origin reports PUBLISHING. */
const RELAY_TIMEOUT = 15_000;

let browser;
let pkg;
withBrowserAndPackages((b, p) => { browser = b; pkg = p; }, { skip });

test('CDN: SDK publish to the origin (config/origin.toml); Embed Player, lbUrl and WHEP players on the edge (config/edge.toml); publisher stop fails them', { skip, timeout: 240_000 }, async (t) => {
  const t0 = Date.now();
  const timings = {};
  const mark = (k) => { timings[k] = Date.now() - t0; };
  let origin;
  let edge;
  let context;
  const pages = [];
  let step = 'start the edge and the origin';
  try {
    // The edge first, so the origin's first stats poll finds it.
    edge = await startRtcdnWithConfig('config/edge.toml');
    origin = await startRtcdnWithConfig('config/origin.toml');
    mark('servers up');

    step = 'GET /lb on the origin';
    // The balancer skips nodes that have not answered their stats poll yet (stats_poll_secs = 2).
    const lb = await poll(async () => {
      const res = await fetch(`${ORIGIN_HTTP}/lb`, { signal: AbortSignal.timeout(2000) });
      const body = await res.text();
      return res.status === 200 ? { body, cors: res.headers.get('access-control-allow-origin'), type: res.headers.get('content-type') } : false;
    }, { timeout: 10_000, interval: 250, what: 'GET /lb on the origin to answer 200' });
    assert.deepEqual(JSON.parse(lb.body), { server: '127.0.0.1', ws: 8180 }, `/lb body ${lb.body}`);
    assert.equal(lb.cors, '*', '/lb carries Access-Control-Allow-Origin: *');
    assert.match(lb.type || '', /^application\/json/);
    const edgeLb = await fetch(`${EDGE_HTTP}/lb`);
    await edgeLb.arrayBuffer();
    assert.equal(edgeLb.status, 404, 'an edge has nothing to balance');
    mark('/lb answers');

    context = await newLoopbackContext(browser);
    const origNewPage = context.newPage.bind(context);
    context.newPage = async () => { const p = await origNewPage(); pages.push(p); return p; };

    // --- Publisher: Two Way Streaming on the origin (the demo's default URL is the origin's). ---
    step = 'publish with Two Way Streaming to the origin';
    const name = `cdn${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;
    const pub = await openLoggedPage(context, pkg.url + TWO_WAY_PATH);
    await waitForText(pub, '#connectBtn', 'Connect');
    await pub.fill('#urlServer', ORIGIN_WS);
    await pub.click('#connectBtn');
    await waitForText(pub, '#connectStatus', 'ESTABLISHED');
    await pub.fill('#publishStream', name);
    await pub.click('#publishBtn');
    await waitForText(pub, '#publishStatus', 'PUBLISHING', { timeout: 20_000 });
    const tPublishing = Date.now();
    mark('PUBLISHING');
    assert.ok(pub.wsFrames.some((f) => f.text === `open ${ORIGIN_WS}/` || f.text === `open ${ORIGIN_WS}`), 'publisher talks to the origin');

    // When does the edge list the stream (the origin's relay arrives)? Recorded, asserted below.
    let relayedAfter = null;
    const relayWatch = poll(async () => {
      const s = await (await fetch(`${EDGE_HTTP}/api/stats`, { signal: AbortSignal.timeout(2000) })).json();
      const st = s.streams.find((x) => x.name === name);
      if (st && st.media_flowing) { relayedAfter = Date.now() - tPublishing; return st; }
      return false;
    }, { timeout: RELAY_TIMEOUT, interval: 100, what: `stream ${name} with media flowing in the edge's /api/stats` });
    relayWatch.catch(() => {});

    // --- Player A: Embed Player with urlServer = the edge; retried while the edge has no stream yet. ---
    step = 'Player A: Embed Player on the edge';
    const embedUrl = `${pkg.url}${EMBED_PLAYER_PATH}?${new URLSearchParams({ urlServer: EDGE_WS, streamName: name, mediaProviders: 'WebRTC', autoplay: 'true' })}`;
    const playerA = await openLoggedPage(context, embedUrl);
    let attempts = 1;
    const notFoundDeadline = tPublishing + RELAY_TIMEOUT;
    for (;;) {
      const outcome = await poll(async () => {
        const status = ((await playerA.textContent('#status')) || '').trim();
        if (status) return `status: ${status}`;
        const playing = framesOf(playerA, 'notifyStreamStatusEvent').some((f) => f.data[0]?.status === 'PLAYING');
        return playing ? 'PLAYING' : false;
      }, { timeout: 20_000, interval: 100, what: 'Embed Player PLAYING or a #status' });
      if (outcome === 'PLAYING') break;
      if (outcome === 'status: FAILED: Stream not found' && Date.now() < notFoundDeadline) {
        attempts += 1;
        await sleep(300);
        await playerA.reload();
        continue;
      }
      throw new Error(`Embed Player on the edge: ${outcome} after ${attempts} attempt(s), ${Date.now() - tPublishing} ms after PUBLISHING`);
    }
    mark('A PLAYING');
    const stA = await waitForSdkVideo(playerA, { minFrames: 60, timeout: 30_000 });
    mark('A 60 frames');
    t.diagnostic(`Player A (Embed Player, edge): ${attempts} attempt(s); ${JSON.stringify(stA)}`);
    assert.equal(await playerA.textContent('#status'), '', 'no FAILED/DISCONNECTED on the Embed Player');
    assert.ok(playerA.wsFrames.every((f) => !f.text.startsWith('open ') || f.text.startsWith(`open ${EDGE_WS}`)), 'Embed Player talks only to the edge');
    const edgeStream = await relayWatch;
    t.diagnostic(`edge lists ${name} with media flowing ${relayedAfter} ms after PUBLISHING: ${JSON.stringify(edgeStream)}`);

    // --- Player B: the SDK's lbUrl option pointed at the origin's /lb. ---
    step = 'Player B: SDK createSession({lbUrl}) on the edge';
    const playerB = await openLoggedPage(context);
    const lbRequests = [];
    playerB.on('response', (r) => { if (r.url().startsWith(`${ORIGIN_HTTP}/lb`)) lbRequests.push({ url: r.url(), status: r.status() }); });
    await playerB.goto(pkg.serve(LB_PAGE_PATH, LB_PAGE));
    assert.equal(await playerB.evaluate(() => typeof Flashphoner.createSession), 'function', 'the package bundle loaded');
    await playerB.evaluate(([u, lb, n]) => window.startLbPlayer(u, lb, n), [ORIGIN_WS, `${ORIGIN_HTTP}/lb`, name]);
    const evB = await poll(() => playerB.evaluate(() => {
      const e = window.__ev.find((x) => x.what === 'stream' || (x.what === 'session' && x.status !== 'ESTABLISHED'));
      return e || false;
    }), { timeout: 20_000, interval: 100, what: 'lbUrl player: stream PLAYING/FAILED or session failure' });
    mark('B PLAYING');
    const wsOpened = playerB.wsFrames.filter((f) => f.text.startsWith('open ')).map((f) => f.text.slice(5));
    t.diagnostic(`Player B: /lb requests ${JSON.stringify(lbRequests)}; WebSockets opened ${JSON.stringify(wsOpened)}; events ${JSON.stringify(await playerB.evaluate(() => window.__ev))}`);
    assert.deepEqual(lbRequests, [{ url: `${ORIGIN_HTTP}/lb`, status: 200 }], 'the SDK asked the origin\'s /lb once');
    assert.deepEqual(wsOpened, [EDGE_WS + '/'], 'the SDK opened its WebSocket to the edge /lb named, and nothing else');
    assert.deepEqual([evB.what, evB.status], ['stream', 'PLAYING'], `lbUrl player: ${JSON.stringify(evB)}`);
    const stB = await waitForSdkVideo(playerB, { containerSelector: '#display', minFrames: 60, timeout: 30_000 });
    mark('B 60 frames');
    t.diagnostic(`Player B (lbUrl -> edge): ${JSON.stringify(stB)}`);

    // --- Player C: the built-in WHEP page via the CDN (cdn=1: /lb) and via the origin's 307. ---
    step = 'Player C1: built-in page with cdn=1 (WHEP to the edge /lb names)';
    const playerC1 = await openLoggedPage(context, `${ORIGIN_HTTP}/?stream=${name}&autostart=play&cdn=1`);
    await waitForState(playerC1, 'playState', 'playing', { timeout: 20_000 });
    const stC1 = await waitForDecodedVideo(playerC1, { minFrames: 60, timeout: 30_000 });
    mark('C1 60 frames');
    const c1 = await playerC1.evaluate(() => ({ server: window.rtcdn.playServer, location: window.rtcdn.playLocation }));
    t.diagnostic(`Player C1 (WHEP, cdn=1): ${JSON.stringify(c1)} ${JSON.stringify(stC1)}`);
    assert.equal(c1.server, EDGE_HTTP, 'the page asked /lb and played from the edge');
    assert.match(c1.location || '', new RegExp(`^${EDGE_HTTP}/whep/${name}/[^/]+$`), 'WHEP resource on the edge');

    step = 'Player C2: built-in page without cdn=1 (origin answers WHEP with 307 to the edge)';
    const redirect = await fetch(`${ORIGIN_HTTP}/whep/${name}`, {
      method: 'POST', redirect: 'manual', headers: { 'Content-Type': 'application/sdp' }, body: 'v=0\r\n',
    });
    await redirect.arrayBuffer();
    assert.equal(redirect.status, 307, 'WHEP on the origin redirects');
    assert.equal(redirect.headers.get('location'), `${EDGE_HTTP}/whep/${name}`);
    const playerC2 = await openLoggedPage(context, `${ORIGIN_HTTP}/?stream=${name}&autostart=play`);
    await waitForState(playerC2, 'playState', 'playing', { timeout: 20_000 });
    const stC2 = await waitForDecodedVideo(playerC2, { minFrames: 60, timeout: 30_000 });
    mark('C2 60 frames');
    const c2 = await playerC2.evaluate(() => ({ server: window.rtcdn.playServer, location: window.rtcdn.playLocation }));
    t.diagnostic(`Player C2 (WHEP, 307): ${JSON.stringify(c2)} ${JSON.stringify(stC2)}`);
    assert.equal(c2.server, ORIGIN_HTTP, 'the page posted to the origin');
    assert.match(c2.location || '', new RegExp(`^${EDGE_HTTP}/whep/${name}/[^/]+$`), 'the redirect took the page to the edge');

    // Where the players are: all on the edge, none on the origin.
    const edgeStats = await (await fetch(`${EDGE_HTTP}/api/stats`)).json();
    const originStats = await (await fetch(`${ORIGIN_HTTP}/api/stats`)).json();
    const onEdge = edgeStats.streams.find((s) => s.name === name);
    const onOrigin = originStats.streams.find((s) => s.name === name);
    t.diagnostic(`edge stream: ${JSON.stringify(onEdge)}; origin stream: ${JSON.stringify(onOrigin)}`);
    assert.equal(onEdge?.players, 4, 'the edge serves the four players (A, B, C1, C2)');
    assert.equal(onOrigin?.players, 0, 'the origin serves no player (the relay is not a player)');

    // --- The publisher stops: every edge player fails. ---
    step = 'publisher stop -> edge players FAILED';
    await pub.click('#publishBtn'); // "Stop"
    await waitForText(pub, '#publishStatus', 'UNPUBLISHED');
    const tStop = Date.now();
    mark('UNPUBLISHED');
    await waitForText(playerA, '#status', 'FAILED: Stopped by publisher stop', { timeout: 15_000 });
    mark('A FAILED');
    const failB = await poll(() => playerB.evaluate(() => window.__ev.find((e) => e.what === 'stream' && e.status !== 'PLAYING') || false),
      { timeout: 15_000, interval: 100, what: 'lbUrl player: a stream status after PLAYING' });
    mark('B FAILED');
    assert.deepEqual([failB.status, failB.info], ['FAILED', 'Stopped by publisher stop'], JSON.stringify(failB));
    const endC1 = await waitForState(playerC1, 'playState', ['ended', 'error'], { timeout: 15_000 });
    const endC2 = await waitForState(playerC2, 'playState', ['ended', 'error'], { timeout: 15_000 });
    mark('C ended');
    t.diagnostic(`after UNPUBLISHED (${Date.now() - tStop} ms): C1 ${endC1} (${await playerC1.textContent('#play-reason')}), C2 ${endC2} (${await playerC2.textContent('#play-reason')})`);
    await poll(async () => {
      const [e, o] = await Promise.all([`${EDGE_HTTP}/api/stats`, `${ORIGIN_HTTP}/api/stats`].map(async (u) => (await fetch(u)).json()));
      return !e.streams.some((s) => s.name === name) && !o.streams.some((s) => s.name === name);
    }, { timeout: 10_000, what: `${name} gone from the origin and the edge` });
    mark('stream gone');

    if (context.blocked.length) t.diagnostic(`blocked off-host requests: ${context.blocked.join(' ')}`);
    t.diagnostic(`timings (ms since start): ${JSON.stringify(timings)}`);
  } catch (e) {
    let extra = `\n--- failed at: ${step} (timings so far ${JSON.stringify(timings)}) ---`;
    for (const [i, p] of pages.entries()) {
      let where = '?';
      try { where = p.url(); } catch {}
      extra += `\n--- page ${i} ${where}: WebSocket frames ('>' sent by the page, '<' received) ---\n${frameLog(p)}`;
      extra += `\n--- page ${i} console ---\n${(p.consoleLines || []).slice(-60).join('\n')}`;
    }
    if (context) extra += `\n--- blocked off-host requests ---\n${context.blocked.join('\n')}`;
    for (const [label, s] of [['origin', origin], ['edge', edge]]) {
      if (s) extra += `\n--- ${label} rtcdn logs (${s.argv.join(' ')}) ---\n${s.logText().split('\n').slice(-150).join('\n')}`;
    }
    e.message += extra;
    throw e;
  } finally {
    await context?.close().catch(() => {});
    // Both stopped and gone before the next test file: the ports are fixed.
    const [ro, re] = await Promise.all([origin?.stop(), edge?.stop()]);
    if (ro?.signal === 'SIGKILL') console.error('origin rtcdn did not exit within 3 s of SIGTERM');
    if (re?.signal === 'SIGKILL') console.error('edge rtcdn did not exit within 3 s of SIGTERM');
  }
});

test('CDN simulcast: Chromium publishes l, m, h to the origin; on the edge a player pinned to ?layer=l gets smaller frames than the default one', { skip, timeout: 180_000 }, async (t) => {
  let origin;
  let edge;
  let context;
  const pages = [];
  try {
    edge = await startRtcdnWithConfig('config/edge.toml');
    origin = await startRtcdnWithConfig('config/origin.toml');
    context = await newLoopbackContext(browser);
    const name = `simcdn${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;
    const pub = await openLoggedPage(context, `${ORIGIN_HTTP}/?stream=${name}&simulcast=1&autostart=publish`);
    pages.push(pub);
    await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
    const answer = await pub.evaluate(() => window.rtcdn.publishPc.remoteDescription.sdp);
    assert.match(answer, /a=simulcast:recv l;m;h/, 'the origin takes the three layers');
    await poll(async () => {
      const s = await (await fetch(`${EDGE_HTTP}/api/stats`, { signal: AbortSignal.timeout(2000) })).json();
      return s.streams.find((x) => x.name === name && x.media_flowing) || false;
    }, { timeout: RELAY_TIMEOUT, interval: 100, what: `stream ${name} with media flowing on the edge` });

    // An edge that got the highest layer only would play both players the same frames.
    const low = await openLoggedPage(context, `${EDGE_HTTP}/?stream=${name}&layer=l&autostart=play`);
    const high = await openLoggedPage(context, `${EDGE_HTTP}/?stream=${name}&autostart=play`);
    pages.push(low, high);
    for (const page of [low, high]) await waitForState(page, 'playState', 'playing', { timeout: 20_000 });
    const lowStats = await waitForDecodedVideo(low, { minFrames: 30, timeout: 30_000 });
    await waitForDecodedVideo(high, { minFrames: 30, timeout: 30_000 });
    t.diagnostic(`pinned l on the edge: ${JSON.stringify(lowStats)}`);
    // Chromium turns its upper layers on as its estimate grows: the default player follows.
    const both = await poll(async () => {
      const h = await videoStats(high);
      const l = await videoStats(low);
      return h && l && h.frameWidth > l.frameWidth ? { high: h, low: l } : false;
    }, { timeout: 40_000, interval: 500, what: 'the default edge player gets larger frames than the pinned one' });
    t.diagnostic(`default vs pinned on the edge: ${JSON.stringify(both)}`);
    assert.ok(both.low.frameWidth <= 1280 / 4 + 16, `pinned to l: ${both.low.frameWidth} px wide`);
    const onOrigin = (await (await fetch(`${ORIGIN_HTTP}/api/stats`)).json()).streams.find((s) => s.name === name);
    assert.equal(onOrigin?.players, 0, 'both play from the edge');
  } catch (e) {
    for (const [label, s] of [['origin', origin], ['edge', edge]]) {
      if (s) e.message += `\n--- ${label} rtcdn logs ---\n${s.logText().split('\n').slice(-100).join('\n')}`;
    }
    throw e;
  } finally {
    for (const page of pages) await page.close().catch(() => {});
    await context?.close().catch(() => {});
    await Promise.all([origin?.stop(), edge?.stop()]);
  }
});
