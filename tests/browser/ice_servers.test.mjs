// `[[ice.servers]]` reach clients (RFC 9725 §4.6): Link rel="ice-server" headers on the WHIP/WHEP
// 201 and on a client's own OPTIONS (not on a CORS preflight, not for a client the token policy
// refuses), with coturn REST credentials that check out (HMAC-SHA1 of the secret), and the
// built-in page passes them to its RTCPeerConnection. The servers named are loopback addresses
// nobody listens on: Chromium's gathering fails on them and it plays over host candidates. The
// real TURN path (coturn, relay only) is tests/netns/turn.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  startRtcdnWithConfig, launchChromium, OFFLINE_CHROMIUM_ARGS, newLoopbackContext, openLoggedPage,
  waitForState, waitForDecodedVideo, freeTcpPort, freeUdpBase, rtcdnBin, e2eSkip,
} from './harness.mjs';

const skip = e2eSkip();
const TURN_SECRET = 'coturn-static-auth-secret-for-the-test';
const JWT_SECRET = 'browser-test-secret-0123456789abcdef-02';
const SERVERS = [
  '[[ice.servers]]', 'urls = ["stun:127.0.0.1:3479"]',
  '[[ice.servers]]', 'urls = ["turn:127.0.0.1:3479?transport=udp", "turn:127.0.0.1:3479?transport=tcp"]',
  `secret = "${TURN_SECRET}"`, 'ttl_secs = 600',
  '[[ice.servers]]', 'urls = ["turn:127.0.0.1:3480"]', 'username = "viewer"', 'credential = "hunter2"',
];

const dir = mkdtempSync(path.join(tmpdir(), 'rtcdn-ice-'));
let browser;
before(async () => {
  if (!skip) browser = await launchChromium({ args: OFFLINE_CHROMIUM_ARGS });
});
after(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startWith(name, lines) {
  const config = path.join(dir, `${name}.toml`);
  writeFileSync(config, ['[http]', `listen = "127.0.0.1:${await freeTcpPort()}"`,
    '[media]', `port_base = ${await freeUdpBase()}`, ...lines, ''].join('\n'));
  return startRtcdnWithConfig(config);
}

/** The Link values of a response, one entry each (fetch joins several headers with ", "). */
function linkValues(res) {
  return (res.headers.get('link') || '').split(/,\s*(?=<)/).filter(Boolean);
}

/** Checks the links name the configured servers with valid minted / fixed credentials. */
function checkLinks(values) {
  assert.equal(values.length, 4, values.join('\n'));
  assert.equal(values[0], '<stun:127.0.0.1:3479>; rel="ice-server"');
  const minted = /^<turn:127\.0\.0\.1:3479\?transport=(udp|tcp)>; rel="ice-server"; username="((\d+):[0-9a-f]{16})"; credential="([^"]+)"; credential-type="password"$/;
  const [a, b] = [minted.exec(values[1]), minted.exec(values[2])];
  assert.ok(a && b, values.join('\n'));
  assert.deepEqual([a[1], b[1]], ['udp', 'tcp']);
  assert.equal(a[2], b[2], 'one username for the entry');
  const expiry = Number(a[3]);
  assert.ok(Math.abs(expiry - (Date.now() / 1000 + 600)) < 30, `expiry ${expiry}`);
  assert.equal(a[4], createHmac('sha1', TURN_SECRET).update(a[2]).digest('base64'), 'coturn REST password');
  assert.equal(values[3], '<turn:127.0.0.1:3480>; rel="ice-server"; username="viewer"; credential="hunter2"; credential-type="password"');
  return a[2];
}

test('OPTIONS names the ICE servers; a CORS preflight and a client the token policy refuses get none', { skip }, async () => {
  const open = await startWith('open', SERVERS);
  try {
    const res = await fetch(`${open.url}/whep/s`, { method: 'OPTIONS' });
    assert.equal(res.status, 204);
    const first = checkLinks(linkValues(res));
    const again = checkLinks(linkValues(await fetch(`${open.url}/whip/s`, { method: 'OPTIONS' })));
    assert.notEqual(first, again, 'each OPTIONS gets its own username');
    const preflight = await fetch(`${open.url}/whep/s`, { method: 'OPTIONS', headers: { 'Access-Control-Request-Method': 'POST', Origin: 'https://a.example' } });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('link'), null);
    assert.match(preflight.headers.get('access-control-expose-headers') || '', /Link/);
    assert.equal(linkValues(await fetch(`${open.url}/other`, { method: 'OPTIONS' })).length, 0);
  } finally {
    await open.stop();
  }
  const guarded = await startWith('token', ['[auth]', 'publish = "token"', 'play = "token"',
    `jwt_secret = "${JWT_SECRET}"`, ...SERVERS]);
  try {
    assert.equal(linkValues(await fetch(`${guarded.url}/whep/s`, { method: 'OPTIONS' })).length, 0, 'no token, no TURN credentials');
    const token = execFileSync(rtcdnBin(), ['token', '--secret', JWT_SECRET, '--ttl', '10m', '--play', 's'], { encoding: 'utf8' }).trim();
    checkLinks(linkValues(await fetch(`${guarded.url}/whep/s?token=${token}`, { method: 'OPTIONS' })));
    assert.equal(linkValues(await fetch(`${guarded.url}/whep/other?token=${token}`, { method: 'OPTIONS' })).length, 0, 'a token for another stream');
  } finally {
    await guarded.stop();
  }
});

test('the built-in page passes the servers to RTCPeerConnection; the WHIP and WHEP 201s carry them', { skip }, async () => {
  const server = await startWith('page', SERVERS);
  const context = await newLoopbackContext(browser);
  try {
    const pub = await openLoggedPage(context, `${server.url}/?stream=ice&autostart=publish&codec=VP8`);
    await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
    const play = await openLoggedPage(context, `${server.url}/?stream=ice&autostart=play`);
    await waitForState(play, 'playState', 'playing', { timeout: 20_000 });
    await waitForDecodedVideo(play, { minFrames: 30 });
    for (const [page, kind] of [[pub, 'publish'], [play, 'play']]) {
      const { servers, links, config } = await page.evaluate((k) => ({
        servers: window.rtcdn[k + 'IceServers'],
        links: window.rtcdn[k + 'Links'],
        config: window.rtcdn[k + 'Pc'].getConfiguration().iceServers,
      }), kind);
      checkLinks(links.split(/,\s*(?=<)/));
      assert.deepEqual(servers.map((s) => s.urls), ['stun:127.0.0.1:3479', 'turn:127.0.0.1:3479?transport=udp',
        'turn:127.0.0.1:3479?transport=tcp', 'turn:127.0.0.1:3480'], kind);
      assert.equal(servers[3].username, 'viewer');
      assert.equal(servers[1].credential, createHmac('sha1', TURN_SECRET).update(servers[1].username).digest('base64'));
      assert.deepEqual(config.map((s) => [s.urls].flat()[0]), servers.map((s) => s.urls), `${kind}: the peer connection's servers`);
    }
  } finally {
    await context.close();
    await server.stop();
  }
});
