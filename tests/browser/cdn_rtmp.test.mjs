// End-to-end, issue 15 step 3: the CDN's RTMP distribution. Two rtcdn processes, an origin
// with stream_distribution = "rtmp" (once from a TOML config, once from WCS's
// flashphoner.properties and loadbalancing.xml) and an edge with an RTMP listener; Chromium
// publishes H.264 to the origin with the official Flashphoner Web SDK, the origin pushes it to
// the edge over RTMP, and the SDK's Embed Player plays it from the edge (frames decoded, audio
// heard). A VP9 publisher goes over RTMP too (Enhanced RTMP vp09) and the edge's Embed Player
// decodes VP9; so does an AV1 publisher (Enhanced RTMP av01), the Embed Player decoding AV1. A VP8
// publisher is relayed over WebRTC instead, with the origin's WARN naming it. The
// publisher's stop fails the edge's player with "Stopped by publisher stop".
// Only 127.0.0.1 is ever contacted (newLoopbackContext, OFFLINE_CHROMIUM_ARGS).
// Set RTCDN_SKIP_E2E=1 to skip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startRtcdn, newLoopbackContext, openLoggedPage, frameLog, framesOf, waitForSdkVideo,
  hookedAudioStats, waitForText, EMBED_PLAYER_PATH, poll, sleep, freeTcpPort,
  withBrowserAndPackages,
} from './harness.mjs';

const skip = process.env.RTCDN_SKIP_E2E ? 'RTCDN_SKIP_E2E is set' : false;
const SECRET = 'cdn-rtmp-test-secret-0123456789abcdef';
/** How long the edge may take to get a stream after the publisher reports PUBLISHING. */
const RELAY_TIMEOUT = 20_000;

/** A page that publishes with the SDK, its SDP stripped of the codecs in `strip`. */
const PUB_PAGE_PATH = '/__rtcdn_test__/publisher.html';
const PUB_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>SDK publisher</title>
<script src="/flashphoner.js"></script></head>
<body><div id="local" style="width:320px;height:240px"></div>
<script>
window.__ev = [];
const log = (what, status, info) => window.__ev.push({ t: Date.now(), what, status, info: info || null });
window.startPublisher = (urlServer, name, strip) => {
  Flashphoner.init({});
  const SESSION = Flashphoner.constants.SESSION_STATUS, STREAM = Flashphoner.constants.STREAM_STATUS;
  const session = window.__session = Flashphoner.createSession({ urlServer });
  session.on(SESSION.FAILED, () => log('session', 'FAILED'));
  session.on(SESSION.ESTABLISHED, () => {
    const stream = window.__stream = session.createStream({
      name, display: document.getElementById('local'), stripCodecs: strip,
    });
    for (const s of [STREAM.PUBLISHING, STREAM.UNPUBLISHED, STREAM.FAILED]) {
      stream.on(s, (st) => log('stream', s, st && st.getInfo && st.getInfo()));
    }
    stream.publish();
  });
};
window.stopPublisher = () => window.__stream.stop();
</script></body></html>`;

let browser;
let pkg;
withBrowserAndPackages((b, p) => { browser = b; pkg = p; }, { skip });

/** The edge: an rtcdn with an RTMP listener that takes relays proving SECRET. */
async function startEdge(dir) {
  const rtmpPort = await freeTcpPort();
  const config = path.join(dir, 'edge.toml');
  writeFileSync(config, `[cdn]\nrole = "edge"\nsecret = "${SECRET}"\n`);
  const edge = await startRtcdn({ args: ['--config', config, '--rtmp', `127.0.0.1:${rtmpPort}`] });
  return Object.assign(edge, { rtmpPort });
}

/** The origin relaying to `edge` over RTMP, from a TOML config or from WCS's files. */
async function startOrigin(dir, edge, style) {
  if (style === 'toml') {
    const config = path.join(dir, 'origin.toml');
    writeFileSync(config, `[cdn]\nload_balancing_enabled = true\nstream_distribution = "rtmp"\nsecret = "${SECRET}"\n\n`
      + `[[cdn.nodes]]\nid = 1\nhost = "127.0.0.1"\nws = ${edge.port}\nrtmp = ${edge.rtmpPort}\n`);
    return startRtcdn({ args: ['--config', config, '--rtmp', 'off'] });
  }
  const wcs = path.join(dir, 'wcs');
  rmSync(wcs, { recursive: true, force: true });
  mkdirSync(wcs);
  writeFileSync(path.join(wcs, 'flashphoner.properties'), `load_balancing_enabled=true\nrtcdn.cdn_secret=${SECRET}\n`);
  writeFileSync(path.join(wcs, 'loadbalancing.xml'), `<?xml version="1.0" encoding="UTF-8"?>
<loadbalancer mode="roundrobin" stream_distribution="rtmp">
  <node id="1"><ip>127.0.0.1</ip><ws>${edge.port}</ws><rtmp>${edge.rtmpPort}</rtmp></node>
</loadbalancer>`);
  return startRtcdn({ args: ['--wcs-config', wcs, '--rtmp', 'off'] });
}

/** Publishes `name` with the SDK page to `server`, its SDP stripped of `strip`; returns the page. */
async function publish(context, server, name, strip) {
  const pub = await openLoggedPage(context);
  await pub.goto(pkg.serve(PUB_PAGE_PATH, PUB_PAGE));
  await pub.evaluate(([u, n, s]) => window.startPublisher(u, n, s), [`ws://127.0.0.1:${server.port}`, name, strip]);
  const ev = await poll(() => pub.evaluate(() => window.__ev.find((e) => e.what === 'stream' || e.status === 'FAILED') || false),
    { timeout: 20_000, interval: 100, what: `${name}: PUBLISHING or a failure` });
  assert.equal(ev.status, 'PUBLISHING', JSON.stringify(ev));
  return pub;
}

/** The Embed Player on the edge playing `name`, reloaded while the edge has no copy yet. */
async function embedPlayer(context, edge, name) {
  const url = `${pkg.url}${EMBED_PLAYER_PATH}?${new URLSearchParams({
    urlServer: `ws://127.0.0.1:${edge.port}`, streamName: name, mediaProviders: 'WebRTC', autoplay: 'true',
  })}`;
  const player = await openLoggedPage(context, url);
  const deadline = Date.now() + RELAY_TIMEOUT;
  for (;;) {
    const outcome = await poll(async () => {
      const status = ((await player.textContent('#status')) || '').trim();
      if (status) return `status: ${status}`;
      const playing = framesOf(player, 'notifyStreamStatusEvent').some((f) => f.data[0]?.status === 'PLAYING');
      return playing ? 'PLAYING' : false;
    }, { timeout: 20_000, interval: 100, what: 'Embed Player PLAYING or a #status' });
    if (outcome === 'PLAYING') return player;
    if (outcome === 'status: FAILED: Stream not found' && Date.now() < deadline) {
      await sleep(300);
      await player.reload();
      continue;
    }
    throw new Error(`Embed Player on the edge: ${outcome}`);
  }
}

/** The origin's relays to its edge, as /api/cdn lists them. */
async function relaysOf(origin) {
  const cdn = await (await fetch(`http://127.0.0.1:${origin.port}/api/cdn`)).json();
  return cdn.edges[0]?.relays || [];
}

for (const style of ['toml', 'wcs']) {
  test(`CDN over RTMP (origin from ${style}): SDK H.264 publish -> RTMP push -> Embed Player on the edge; VP8 over WebRTC with a WARN; VP9 and AV1 over RTMP; publisher stop fails the player`, { skip, timeout: 180_000 }, async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'rtcdn-cdn-rtmp-'));
    let origin;
    let edge;
    let context;
    const pages = [];
    let step = 'start the edge and the origin';
    try {
      edge = await startEdge(dir);
      origin = await startOrigin(dir, edge, style);
      context = await newLoopbackContext(browser);
      const origNewPage = context.newPage.bind(context);
      context.newPage = async () => { const p = await origNewPage(); pages.push(p); return p; };
      const suffix = Math.floor(Math.random() * 0x10000).toString(16);

      step = 'publish H.264 with the SDK to the origin';
      const name = `rtmprelay${suffix}`;
      const pub = await publish(context, origin, name, 'VP8,VP9,AV1');

      step = 'the origin pushes over RTMP';
      const relay = await poll(async () => (await relaysOf(origin)).find((r) => r.stream === name && r.state === 'up') || false,
        { timeout: RELAY_TIMEOUT, interval: 200, what: `${name}'s relay up` });
      assert.equal(relay.transport, 'rtmp', JSON.stringify(relay));

      step = 'the Embed Player plays from the edge';
      const player = await embedPlayer(context, edge, name);
      const video = await waitForSdkVideo(player, { minFrames: 60, timeout: 30_000 });
      t.diagnostic(`Embed Player on the edge: ${JSON.stringify(video)}`);
      assert.match(video.mimeType || '', /H264/i, 'H.264 all the way');
      // Chromium measures the level of the audio it plays out, and the Embed Player starts
      // muted (autoplay): unmute it as a user would.
      await player.evaluate(() => { document.querySelector('#remoteVideo video').muted = false; });
      let audio = null;
      await poll(async () => {
        audio = await hookedAudioStats(player);
        return audio && audio.packetsReceived >= 50 && audio.totalAudioEnergy > 0 && audio.audioLevel > 0.001;
      }, { timeout: 15_000, interval: 250, what: 'the edge player hears audio' }).catch((e) => {
        throw new Error(`${e.message}; last audio stats: ${JSON.stringify(audio)}`);
      });
      t.diagnostic(`audio on the edge: ${JSON.stringify(audio)}`);
      assert.equal(audio.mimeType?.toLowerCase(), 'audio/opus');
      const edgeCdn = await (await fetch(`http://127.0.0.1:${edge.port}/api/cdn`)).json();
      assert.equal(edgeCdn.relays_in?.length, 1, `the edge knows one relay's copy: ${JSON.stringify(edgeCdn)}`);

      step = 'a VP8 publisher goes over WebRTC';
      const vp8Name = `vp8relay${suffix}`;
      const vp8Pub = await publish(context, origin, vp8Name, 'H264,VP9,AV1');
      const vp8Relay = await poll(async () => (await relaysOf(origin)).find((r) => r.stream === vp8Name && r.state === 'up') || false,
        { timeout: RELAY_TIMEOUT, interval: 200, what: `${vp8Name}'s relay up` });
      assert.notEqual(vp8Relay.transport, 'rtmp', JSON.stringify(vp8Relay));
      const warns = origin.logText().split('\n').filter((l) => l.includes('relayed over WebRTC, not RTMP'));
      assert.equal(warns.length, 1, `one WARN:\n${warns.join('\n')}`);
      assert.match(warns[0], /WARN/);
      assert.match(warns[0], new RegExp(vp8Name));
      assert.match(warns[0], /VP8/);
      const vp8Player = await embedPlayer(context, edge, vp8Name);
      const vp8Video = await waitForSdkVideo(vp8Player, { minFrames: 30, timeout: 30_000 });
      assert.match(vp8Video.mimeType || '', /VP8/i, JSON.stringify(vp8Video));
      await vp8Pub.evaluate(() => window.stopPublisher());

      step = 'a VP9 publisher goes over RTMP';
      const vp9Name = `vp9relay${suffix}`;
      const vp9Pub = await publish(context, origin, vp9Name, 'VP8,H264,AV1');
      const vp9Relay = await poll(async () => (await relaysOf(origin)).find((r) => r.stream === vp9Name && r.state === 'up') || false,
        { timeout: RELAY_TIMEOUT, interval: 200, what: `${vp9Name}'s relay up` });
      assert.equal(vp9Relay.transport, 'rtmp', JSON.stringify(vp9Relay));
      const vp9Player = await embedPlayer(context, edge, vp9Name);
      const vp9Video = await waitForSdkVideo(vp9Player, { minFrames: 30, timeout: 30_000 });
      t.diagnostic(`VP9 Embed Player on the edge: ${JSON.stringify(vp9Video)}`);
      assert.match(vp9Video.mimeType || '', /VP9/i, JSON.stringify(vp9Video));
      await vp9Pub.evaluate(() => window.stopPublisher());

      step = 'an AV1 publisher goes over RTMP';
      const av1Name = `av1relay${suffix}`;
      const av1Pub = await publish(context, origin, av1Name, 'VP8,H264,VP9');
      const av1Relay = await poll(async () => (await relaysOf(origin)).find((r) => r.stream === av1Name && r.state === 'up') || false,
        { timeout: RELAY_TIMEOUT, interval: 200, what: `${av1Name}'s relay up` });
      assert.equal(av1Relay.transport, 'rtmp', JSON.stringify(av1Relay));
      const av1Player = await embedPlayer(context, edge, av1Name);
      const av1Video = await waitForSdkVideo(av1Player, { minFrames: 30, timeout: 30_000 });
      t.diagnostic(`AV1 Embed Player on the edge: ${JSON.stringify(av1Video)}`);
      assert.match(av1Video.mimeType || '', /AV1/i, JSON.stringify(av1Video));
      await av1Pub.evaluate(() => window.stopPublisher());

      step = 'publisher stop fails the edge player';
      await pub.evaluate(() => window.stopPublisher());
      await waitForText(player, '#status', 'FAILED: Stopped by publisher stop', { timeout: 15_000 });
      if (context.blocked.length) t.diagnostic(`blocked off-host requests: ${context.blocked.join(' ')}`);
    } catch (e) {
      let extra = `\n--- failed at: ${step} ---`;
      for (const [i, p] of pages.entries()) {
        let where = '?';
        try { where = p.url(); } catch {}
        extra += `\n--- page ${i} ${where}: WebSocket frames ---\n${frameLog(p)}`;
        extra += `\n--- page ${i} console ---\n${(p.consoleLines || []).slice(-40).join('\n')}`;
      }
      for (const [label, s] of [['origin', origin], ['edge', edge]]) {
        if (s) extra += `\n--- ${label} rtcdn logs (${s.argv.join(' ')}) ---\n${s.logText().split('\n').slice(-120).join('\n')}`;
      }
      e.message += extra;
      throw e;
    } finally {
      await context?.close();
      await origin?.stop();
      await edge?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
