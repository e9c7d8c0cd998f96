// The dynamic CDN with real browsers (issue 14): a redis-server and three rtcdn processes on
// loopback — an origin and two edges sharing a cluster secret. Chromium publishes to the origin
// with the official Flashphoner SDK demo (Two Way Streaming); right after PUBLISHING, with no
// retry:
//   A. an SDK page with lbUrl = the origin's /lb?stream=NAME plays from the edge /lb names: the
//      edge pulls the stream for it (no "Stream not found" race) and frames are decoded;
//   B. rtcdn's built-in page posts WHEP to the origin, which redirects it (307) to the same edge
//      (a stream's players gather on its edge), and frames are decoded;
// the origin relays the stream once (one pull), and `show_routes` names the route.
// A second test kills an origin with SIGKILL while an edge's WHEP player plays its stream; the
// stream is published again on another origin, and the same player session decodes on.
// Only 127.0.0.1 is ever contacted. Set RTCDN_SKIP_E2E=1 to skip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  startRtcdnWithConfig, newLoopbackContext, openLoggedPage, frameLog, waitForSdkVideo, waitForText,
  waitForState, waitForDecodedVideo, TWO_WAY_PATH, LB_PAGE_PATH, LB_PAGE, poll, freeTcpPort,
  freeUdpBase, videoStats, e2eSkip, withBrowserAndPackages,
} from './harness.mjs';

const skip = e2eSkip();
const SECRET = 'browser-test-cluster-secret-0123456789';

let browser;
let pkg;
withBrowserAndPackages((b, p) => { browser = b; pkg = p; }, { skip });

/** redis-server on a free loopback port, no persistence; resolves once it answers PING. */
async function startRedis() {
  const port = await freeTcpPort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let exited = false;
  child.on('exit', () => { exited = true; });
  await poll(() => new Promise((resolve) => {
    if (exited) throw new Error('redis-server exited (is Debian\'s redis-server installed?)');
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => resolve(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
  }), { timeout: 10_000, interval: 100, what: 'redis-server to answer PING' });
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

/** Starts one rtcdn process per [label, roles] in the cluster of `redis`, configs in `dir`. */
async function startClusterNodes(dir, redis, specs) {
  const nodes = [];
  for (const [label, roles] of specs) {
    const http = await freeTcpPort();
    const udp = await freeUdpBase();
    const config = path.join(dir, `${label}.toml`);
    writeFileSync(config, `[http]\nlisten = "127.0.0.1:${http}"\n[media]\nport_base = ${udp}\nthreads = 1\n` +
      `[rtmp]\nenabled = false\n[cluster]\nredis_url = "${redis.url}"\nnode_id = "${label}"\nroles = ${roles}\n` +
      `secret = "${SECRET}"\n`);
    const server = await startRtcdnWithConfig(config);
    nodes.push(Object.assign(server, { label, http: `http://127.0.0.1:${http}`, ws: `ws://127.0.0.1:${http}` }));
  }
  return nodes;
}

/** Adds the failed step, the pages' frames and consoles and the nodes' logs to `e`. */
function explain(e, step, pages, nodes) {
  let extra = `\n--- failed at: ${step} ---`;
  for (const [i, p] of pages.entries()) {
    extra += `\n--- page ${i}: WebSocket frames ---\n${frameLog(p)}`;
    extra += `\n--- page ${i} console ---\n${(p.consoleLines || []).slice(-40).join('\n')}`;
  }
  for (const n of nodes) extra += `\n--- ${n.label} rtcdn logs ---\n${n.logText().split('\n').slice(-80).join('\n')}`;
  e.message += extra;
  return e;
}

/** Runs `body` with a redis-server, the rtcdn nodes `specs` ([label, roles]) and a browser
 * context; `state.step` names what it is doing, which a failure reports with the pages' frames
 * and consoles and the nodes' logs. Everything is stopped and removed after. */
async function withCluster(prefix, specs, body) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  let nodes = [];
  let redis;
  let context;
  const pages = [];
  const state = { step: 'start redis and the nodes' };
  try {
    redis = await startRedis();
    nodes = await startClusterNodes(dir, redis, specs);
    context = await newLoopbackContext(browser);
    await body({ nodes, context, pages, state });
  } catch (e) {
    throw explain(e, state.step, pages, nodes);
  } finally {
    for (const page of pages) await page.close().catch(() => {});
    await context?.close().catch(() => {});
    await Promise.all(nodes.map((n) => n.stop()));
    redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('dynamic CDN: SDK publish on the origin; an lbUrl SDK player and a WHEP player are sent to the stream\'s edge, which pulls it on demand', { skip, timeout: 240_000 }, async (t) => {
  const specs = [['origin', '["origin"]'], ['edge1', '["edge"]'], ['edge2', '["edge"]']];
  await withCluster('rtcdn-cluster-', specs, async ({ nodes, context, pages, state }) => {
    const [origin, ...edges] = nodes;
    const name = `dyn${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;

    state.step = 'the origin\'s /lb knows both edges';
    const lbUrl = `${origin.http}/lb?stream=${name}`;
    const seen = new Set();
    await poll(async () => {
      for (let i = 0; i < 12; i++) {
        const res = await fetch(`${origin.http}/lb?stream=probe${i}`, { signal: AbortSignal.timeout(2000) });
        if (res.status === 200) seen.add((await res.json()).ws); else await res.arrayBuffer();
      }
      return seen.size === 2;
    }, { timeout: 15_000, interval: 250, what: 'the origin\'s /lb to answer with both edges' });
    const chosen = await (await fetch(lbUrl)).json();
    const edge = edges.find((e) => e.http.endsWith(`:${chosen.ws}`));
    assert.ok(edge, `/lb named an edge: ${JSON.stringify(chosen)}`);
    t.diagnostic(`/lb for ${name}: ${JSON.stringify(chosen)}`);

    state.step = 'publish with Two Way Streaming to the origin';
    const pub = await openLoggedPage(context, pkg.url + TWO_WAY_PATH);
    pages.push(pub);
    await waitForText(pub, '#connectBtn', 'Connect');
    await pub.fill('#urlServer', origin.ws);
    await pub.click('#connectBtn');
    await waitForText(pub, '#connectStatus', 'ESTABLISHED');
    await pub.fill('#publishStream', name);
    await pub.click('#publishBtn');
    await waitForText(pub, '#publishStatus', 'PUBLISHING', { timeout: 20_000 });
    const tPublishing = Date.now();

    state.step = 'A: SDK lbUrl player, once, right after PUBLISHING';
    const playerA = await openLoggedPage(context);
    pages.push(playerA);
    await playerA.goto(pkg.serve(LB_PAGE_PATH, LB_PAGE));
    await playerA.evaluate(([u, lb, n]) => window.startLbPlayer(u, lb, n), [origin.ws, lbUrl, name]);
    const evA = await poll(() => playerA.evaluate(() => window.__ev.find((x) => x.what === 'stream' || (x.what === 'session' && x.status !== 'ESTABLISHED')) || false),
      { timeout: 20_000, interval: 100, what: 'lbUrl player: stream PLAYING/FAILED or session failure' });
    assert.deepEqual([evA.what, evA.status], ['stream', 'PLAYING'], `first try: ${JSON.stringify(evA)}`);
    const wsOpened = playerA.wsFrames.filter((f) => f.text.startsWith('open ')).map((f) => f.text.slice(5));
    assert.deepEqual(wsOpened, [`${edge.ws}/`], 'the SDK played from the edge /lb named');
    const stA = await waitForSdkVideo(playerA, { containerSelector: '#display', minFrames: 60, timeout: 30_000 });
    t.diagnostic(`A (lbUrl, pulled on demand): PLAYING ${evA.t - tPublishing} ms after PUBLISHING; ${JSON.stringify(stA)}`);

    state.step = 'B: built-in page, WHEP to the origin, redirected to the stream\'s edge';
    const playerB = await openLoggedPage(context, `${origin.http}/?stream=${name}&autostart=play`);
    pages.push(playerB);
    await waitForState(playerB, 'playState', 'playing', { timeout: 20_000 });
    const stB = await waitForDecodedVideo(playerB, { minFrames: 60, timeout: 30_000 });
    const b = await playerB.evaluate(() => ({ location: window.rtcdn.playLocation }));
    t.diagnostic(`B (WHEP 307): ${JSON.stringify(b)} ${JSON.stringify(stB)}`);
    assert.match(b.location || '', new RegExp(`^${edge.http}/whep/${name}/[^/]+$`), 'redirected to the stream\'s edge');

    state.step = 'one pull, one route';
    const cdn = await (await fetch(`${origin.http}/api/cdn`)).json();
    assert.equal(cdn.pulls_out.length, 1, `one relay out of the origin: ${JSON.stringify(cdn.pulls_out)}`);
    assert.equal(cdn.pulls_out[0].node, chosen.node);
    const routes = await (await fetch(`${origin.http}/rest-api/cdn/show_routes`)).json();
    assert.deepEqual(Object.values(routes), [name], JSON.stringify(routes));
    const onEdge = (await (await fetch(`${edge.http}/api/stats`)).json()).streams.find((s) => s.name === name);
    assert.equal(onEdge?.players, 2, 'both players on the stream\'s edge');

    state.step = 'the edge\'s console shows the cluster\'s nodes and the pull';
    const ops = await openLoggedPage(context, `${edge.http}/console#/cdn`);
    pages.push(ops);
    await ops.waitForSelector('.cluster-node.self');
    const cards = await poll(async () => {
      const found = await ops.$$eval('.cluster-node', (els) => els.map((e) => ({ id: e.dataset.node, text: e.textContent })));
      return found.length === 3 && found.some((c) => c.text.includes(`${name} → here`)) ? found : false;
    }, { timeout: 10_000, what: 'three cluster nodes in the console, one with the pull' });
    const pulledFrom = cards.find((c) => c.text.includes(`${name} → here`));
    assert.match(pulledFrom.text, /origin.*arrived/s, JSON.stringify(cards));
    assert.equal(await ops.$eval('.cluster-node.self', (e) => e.dataset.node), chosen.node, 'this node marked');
    await ops.screenshot({ path: '/tmp/rtcdn-console-cluster.png' });
  });
});

test('dynamic CDN failover: the origin is killed, the stream is published on another origin, and the edge\'s WHEP player decodes on in the same session', { skip, timeout: 240_000 }, async (t) => {
  const specs = [['origin-a', '["origin"]'], ['origin-b', '["origin"]'], ['edge', '["edge"]']];
  await withCluster('rtcdn-failover-', specs, async ({ nodes, context, pages, state }) => {
    const [originA, originB, edge] = nodes;
    const name = `fo${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;

    state.step = 'publish on origin A (built-in page, WHIP)';
    const pubA = await openLoggedPage(context, `${originA.http}/?stream=${name}&autostart=publish`);
    pages.push(pubA);
    await waitForState(pubA, 'publishState', 'publishing', { timeout: 20_000 });

    state.step = 'play on the edge (built-in page, WHEP): the edge pulls from A';
    const player = await openLoggedPage(context, `${edge.http}/?stream=${name}&autostart=play`);
    pages.push(player);
    await waitForState(player, 'playState', 'playing', { timeout: 20_000 });
    await waitForDecodedVideo(player, { minFrames: 60, timeout: 30_000 });
    await player.evaluate(() => { window.__failoverPc = window.rtcdn.playPc; });

    state.step = 'kill origin A with SIGKILL';
    const killed = Date.now();
    process.kill(originA.pid, 'SIGKILL');
    await poll(() => originA.exited !== null, { timeout: 5_000, interval: 50, what: 'origin A to exit' });
    await pubA.close();

    state.step = 'publish again on origin B, refused while A\'s claim lives';
    let pubB;
    let attempts = 0;
    await poll(async () => {
      attempts += 1;
      if (pubB) await pubB.close();
      pubB = await openLoggedPage(context, `${originB.http}/?stream=${name}&autostart=publish`);
      const state = await waitForState(pubB, 'publishState', ['publishing', 'error', 'ended'], { timeout: 15_000 });
      return state === 'publishing';
    }, { timeout: 30_000, interval: 300, what: 'origin B to accept the publish' });
    pages.push(pubB);
    const republished = Date.now();

    state.step = 'the edge\'s player decodes B\'s video in the same session';
    const stalled = (await videoStats(player)).framesDecoded;
    const resumed = await poll(async () => {
      const s = await videoStats(player);
      return s.framesDecoded > stalled + 5 ? Date.now() : false;
    }, { timeout: 20_000, interval: 100, what: 'frames decoded again after the switch' });
    const after = await waitForDecodedVideo(player, { minFrames: stalled + 60, timeout: 30_000 });
    const same = await player.evaluate(() => ({
      pc: window.__failoverPc === window.rtcdn.playPc, state: window.rtcdn.playState,
      connection: window.rtcdn.playPc.connectionState,
    }));
    assert.deepEqual(same, { pc: true, state: 'playing', connection: 'connected' }, 'no reconnection');
    const repair = await player.evaluate(async () => {
      let out = null;
      (await window.rtcdn.playPc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          out = { pliCount: r.pliCount, keyFramesDecoded: r.keyFramesDecoded, packetsLost: r.packetsLost };
        }
      });
      return out;
    });
    t.diagnostic(`B accepted the publish ${republished - killed} ms after A was killed (${attempts} attempts); ` +
      `frames decoded again ${resumed - killed} ms after the kill (${resumed - republished} ms after the new publish); ` +
      `${after.framesDecoded - stalled} frames since, ${JSON.stringify(after)} ${JSON.stringify(repair)}`);
    const listed = (await (await fetch(`${edge.http}/api/stats`)).json()).streams.find((s) => s.name === name);
    assert.equal(listed?.players, 1, 'the edge kept its one player');
  });
});
