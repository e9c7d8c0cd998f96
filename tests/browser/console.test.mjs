// End-to-end: the operator console (/console) on a node with an admin token, in headless
// Chromium, with real data: the built-in page publishes a stream; the console (after it was
// given the token) lists it with its bitrate and a player count that moves when a player joins;
// the operator kicks the player from the sessions table and sees it go, and the player's page
// says an administrator ended it; then ends the stream from its page, and the publisher's page
// says so. A screenshot of each view goes to /tmp for a person to look at.
// Only 127.0.0.1 is contacted. Set RTCDN_SKIP_E2E=1 to skip.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  startRtcdnWithConfig, launchChromium, openPage, waitForState, freeTcpPort, freeUdpBase, poll, e2eSkip, logTail,
} from './harness.mjs';

const skip = e2eSkip();
const ADMIN = 'console-test-admin-token-0123456789';

let browser;
before(async () => { if (!skip) browser = await launchChromium(); });
after(async () => { await browser?.close(); });

async function withAdminRtcdn(body) {
  const dir = mkdtempSync(path.join(tmpdir(), 'rtcdn-console-'));
  const port = await freeTcpPort();
  const config = path.join(dir, 'console.toml');
  writeFileSync(config, [
    '[http]', `listen = "127.0.0.1:${port}"`,
    '[media]', `port_base = ${await freeUdpBase()}`,
    '[auth]', `admin_token = "${ADMIN}"`,
    '',
  ].join('\n'));
  const server = await startRtcdnWithConfig(config);
  try {
    await body(server);
  } catch (e) {
    e.message += logTail(server, { lines: 150 });
    throw e;
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The console's row for `stream`, read from the DOM: {bitrate, players, state} or null. */
function streamRow(page, stream) {
  return page.evaluate((name) => {
    const row = document.querySelector(`#streams tr[data-stream="${CSS.escape(name)}"]`);
    if (!row) return null;
    return {
      bitrate: row.querySelector('.bitrate').textContent.trim(),
      players: Number(row.querySelector('.players').textContent),
      state: row.querySelector('.pill').textContent,
    };
  }, stream);
}

test('the console lists a live stream, counts its players and kicks one', { skip, timeout: 120_000 }, async (t) => {
  await withAdminRtcdn(async (server) => {
    const stream = 'console-demo';
    const pub = await openPage(browser, `${server.url}/?stream=${stream}&autostart=publish`);
    const ops = await openPage(browser, `${server.url}/console`);
    const play = await openPage(browser);
    try {
      await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });

      // Without the token the console says what it needs, and shows nothing.
      await poll(() => ops.evaluate(() => window.rtcdnConsole.error), { what: 'the console refused by the node' });
      assert.match(await ops.textContent('#token-note'), /admin token/);
      assert.equal(await streamRow(ops, stream), null);

      // With it, the stream appears with a measured bitrate and no players.
      await ops.fill('#token', ADMIN);
      await ops.click('#token-form button');
      assert.equal(await ops.evaluate(() => sessionStorage.getItem('rtcdn.adminToken')), ADMIN);
      const row = await poll(async () => {
        const r = await streamRow(ops, stream);
        return r && /^([1-9]\d* kbit|[\d.]+ Mbit)/.test(r.bitrate) && r.state === 'live' ? r : null;
      }, { timeout: 15_000, what: 'the stream listed with a bitrate' });
      t.diagnostic(`listed: ${JSON.stringify(row)}`);
      assert.equal(row.players, 0);
      await ops.setViewportSize({ width: 1280, height: 720 });
      await ops.screenshot({ path: '/tmp/rtcdn-console-streams.png' });

      // A player joins: the count moves without a reload.
      const polls = await ops.evaluate(() => window.rtcdnConsole.polls);
      await play.goto(`${server.url}/?stream=${stream}&autostart=play`);
      await waitForState(play, 'playState', 'playing', { timeout: 20_000 });
      await poll(async () => (await streamRow(ops, stream))?.players === 1, { timeout: 10_000, what: 'one player listed' });
      assert.ok(await ops.evaluate((p) => window.rtcdnConsole.polls > p, polls), 'updated by polling');

      // The sessions table: kick the player; it goes from the table, and its page says why.
      await ops.goto(`${server.url}/console#/sessions`);
      const playerRow = '#sessions tr[data-kind="player"]';
      await ops.waitForSelector(playerRow, { timeout: 10_000 });
      assert.equal(await ops.locator('#sessions tr[data-kind="publisher"]').count(), 1);
      const peer = await ops.locator(`${playerRow} td`).nth(4).textContent();
      assert.match(peer, /^127\.0\.0\.1:\d+$/);
      await ops.screenshot({ path: '/tmp/rtcdn-console-sessions.png' });
      await ops.click(`${playerRow} button.kick`);
      await poll(async () => (await ops.locator(playerRow).count()) === 0, { timeout: 10_000, what: 'the kicked player gone from the table' });
      await waitForState(play, 'playState', ['ended', 'error'], { timeout: 15_000 });
      const reason = await poll(async () => {
        const text = await play.textContent('#play-reason');
        return /administrator/.test(text) ? text : null;
      }, { timeout: 10_000, what: 'the player page naming the administrator' });
      t.diagnostic(`player page: ${reason}`);
      // Its Stop now deletes nothing: the node already ended the session (no 404 in the log).
      await play.click('#play-stop');
      await waitForState(play, 'playState', 'stopped');
      await ops.goto(`${server.url}/console#/streams`);
      await poll(async () => (await streamRow(ops, stream))?.players === 0, { timeout: 10_000, what: 'no players listed' });

      // The stream page: the embedded player plays, the snippets name the stream's URLs.
      await ops.click(`#streams tr[data-stream="${stream}"] a`);
      await ops.waitForSelector('#view-stream:not([hidden])');
      const whip = await ops.textContent('#snippet-0');
      assert.equal(whip, `${server.url}/whip/${stream}`);
      assert.equal(await ops.textContent('#snippet-1'), `${server.url}/whep/${stream}`);
      await ops.click('#player-start');
      await poll(async () => ops.evaluate(() => {
        const v = document.getElementById('player');
        return v.videoWidth > 0 && v.currentTime > 0.5;
      }), { timeout: 20_000, what: 'video in the embedded player' });
      await poll(async () => (await ops.locator('#stream-sessions tr[data-kind="player"]').count()) === 1,
        { timeout: 10_000, what: 'the embedded player in the stream\'s sessions' });
      await ops.screenshot({ path: '/tmp/rtcdn-console-stream.png' });

      // Its Stop deletes the resource before closing: the session goes, and no DELETE is refused.
      await ops.click('#player-stop');
      await poll(async () => (await ops.locator('#stream-sessions tr[data-kind="player"]').count()) === 0,
        { timeout: 10_000, what: 'the embedded player gone after Stop' });
      assert.deepEqual(server.logText().split('\n').filter((l) => /request refused/.test(l) && /DELETE/.test(l)), []);

      // End the stream from its page: the publisher's page says an administrator ended it.
      await ops.click('#stream-end');
      await waitForState(pub, 'publishState', 'ended', { timeout: 15_000 });
      await poll(async () => /administrator/.test(await pub.textContent('#publish-reason')),
        { timeout: 10_000, what: 'the publisher page naming the administrator' });
      await poll(async () => /not live/.test(await ops.textContent('#stream-facts')),
        { timeout: 10_000, what: 'the stream page saying the stream is not live' });

      // The CDN view of a lone node.
      await ops.goto(`${server.url}/console#/cdn`);
      await ops.waitForSelector('#cdn-self');
      assert.equal(await ops.getAttribute('#cdn-self', 'data-role'), 'standalone');
      await ops.screenshot({ path: '/tmp/rtcdn-console-cdn.png' });
    } finally {
      await pub.close();
      await ops.close();
      await play.close();
    }
  });
});

test('the console maps an origin to its edge with its health and relayed stream', { skip, timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'rtcdn-console-cdn-'));
  const secret = 'console-cdn-secret-0123456789abcdef';
  const [edgePort, originPort] = [await freeTcpPort(), await freeTcpPort()];
  const write = (name, lines) => { const f = path.join(dir, name); writeFileSync(f, lines.join('\n') + '\n'); return f; };
  const edgeConfig = write('edge.toml', [
    '[http]', `listen = "127.0.0.1:${edgePort}"`, '[media]', 'bind = "127.0.0.1"', `port_base = ${await freeUdpBase()}`, 'threads = 1',
    '[cdn]', 'role = "edge"', `secret = "${secret}"`,
  ]);
  const originConfig = write('origin.toml', [
    '[http]', `listen = "127.0.0.1:${originPort}"`, '[media]', 'bind = "127.0.0.1"', `port_base = ${await freeUdpBase()}`, 'threads = 1',
    '[auth]', `admin_token = "${ADMIN}"`,
    '[cdn]', 'role = "origin"', 'load_balancing_enabled = true', 'stats_poll_secs = 1', `secret = "${secret}"`,
    '[[cdn.nodes]]', 'id = 7', 'host = "127.0.0.1"', `ws = ${edgePort}`,
  ]);
  const edge = await startRtcdnWithConfig(edgeConfig);
  const origin = await startRtcdnWithConfig(originConfig);
  const pub = await openPage(browser, `${origin.url}/?stream=mapped&autostart=publish`);
  const ops = await openPage(browser);
  try {
    await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
    await ops.goto(`${origin.url}/console`);
    await ops.evaluate((token) => sessionStorage.setItem('rtcdn.adminToken', token), ADMIN);
    await ops.goto(`${origin.url}/console#/cdn`);
    await ops.setViewportSize({ width: 1280, height: 720 });
    const edgeBox = '#cdn-map .edge[data-edge="7"]';
    const seen = await poll(async () => {
      const text = await ops.locator(edgeBox).textContent({ timeout: 500 }).catch(() => '');
      return /answering/.test(text) && /mapped\s*up/.test(text) && /\d+ calls?/.test(text) ? text : null;
    }, { timeout: 20_000, what: 'edge 7 answering with the stream relayed' });
    t.diagnostic(`edge box: ${seen.replace(/\s+/g, ' ').trim()}`);
    assert.equal(await ops.getAttribute('#cdn-self', 'data-role'), 'origin');
    await ops.screenshot({ path: '/tmp/rtcdn-console-cdn-map.png' });

    // The edge's console: the origin's relay bringing the stream in.
    const onEdge = await openPage(browser, `${edge.url}/console#/cdn`);
    try {
      await onEdge.setViewportSize({ width: 1280, height: 720 });
      await poll(async () => /mapped\s*connected/.test(await onEdge.locator('#cdn-origin').textContent({ timeout: 500 }).catch(() => '')),
        { timeout: 10_000, what: 'the edge console showing the relay in' });
      assert.equal(await onEdge.getAttribute('#cdn-self', 'data-role'), 'edge');
      await onEdge.screenshot({ path: '/tmp/rtcdn-console-cdn-edge.png' });
    } finally {
      await onEdge.close();
    }

    // The edge goes away: the map shows it silent.
    await edge.stop();
    await poll(async () => /silent/.test(await ops.locator(edgeBox).textContent()), { timeout: 15_000, what: 'edge 7 silent' });
  } catch (e) {
    e.message += `\n--- origin logs ---\n${origin.logText().split('\n').slice(-80).join('\n')}`;
    throw e;
  } finally {
    await pub.close();
    await ops.close();
    await origin.stop();
    await edge.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
