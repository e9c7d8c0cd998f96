// End-to-end: a node with auth.publish = auth.play = "token" (a config file of the test's own),
// tokens minted by the rtcdn binary itself (`rtcdn token`), and real clients:
//   A. the OFFICIAL Flashphoner Web SDK (the package's flashphoner.js, on a page of the test's
//      own served next to the demos): createSession({urlServer, custom: {token}}) publishes and
//      plays; without a token the stream gets FAILED with the reason.
//   B. rtcdn's built-in page: WHIP publish and WHEP play with ?token= (frames decoded); without
//      a token the page shows the 401.
// Only 127.0.0.1 is ever contacted (newLoopbackContext, OFFLINE_CHROMIUM_ARGS).
// Set RTCDN_SKIP_E2E=1 to skip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  startRtcdnWithConfig, newLoopbackContext, openLoggedPage, frameLog, waitForState,
  waitForDecodedVideo, waitForSdkVideo, freeTcpPort, freeUdpBase, rtcdnBin, poll, e2eSkip, logTail,
  withBrowserAndPackages,
} from './harness.mjs';

const skip = e2eSkip();
const SECRET = 'browser-test-secret-0123456789abcdef-01';

let browser;
let pkg;
withBrowserAndPackages((b, p) => { browser = b; pkg = p; }, { skip });

/** `rtcdn token ...`: the binary mints the token, as a newcomer would. */
function mint(...args) {
  return execFileSync(rtcdnBin(), ['token', '--secret', SECRET, '--ttl', '10m', ...args], { encoding: 'utf8' }).trim();
}

/** Runs body(server) with a token-protected rtcdn started from a config file. */
async function withProtectedRtcdn(t, body) {
  const dir = mkdtempSync(path.join(tmpdir(), 'rtcdn-auth-'));
  const port = await freeTcpPort();
  const config = path.join(dir, 'auth.toml');
  writeFileSync(config, [
    '[http]', `listen = "127.0.0.1:${port}"`,
    '[media]', `port_base = ${await freeUdpBase()}`,
    '[auth]', 'publish = "token"', 'play = "token"', `jwt_secret = "${SECRET}"`,
    '',
  ].join('\n'));
  const server = await startRtcdnWithConfig(config);
  const context = await newLoopbackContext(browser);
  const pages = [];
  const origNewPage = context.newPage.bind(context);
  context.newPage = async () => { const p = await origNewPage(); pages.push(p); return p; };
  try {
    await body({ server, context });
  } catch (e) {
    for (const [i, p] of pages.entries()) {
      e.message += `\n--- page ${i}: WebSocket frames ---\n${frameLog(p)}`;
      e.message += `\n--- page ${i} console ---\n${(p.consoleLines || []).slice(-40).join('\n')}`;
    }
    e.message += logTail(server, { lines: 120 });
    throw e;
  } finally {
    await context.close().catch(() => {});
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A page of the test's own with the package's SDK bundle; publish()/play() record statuses. */
const SDK_PAGE_PATH = '/__rtcdn_test__/token_client.html';
const SDK_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>token client</title>
<script src="/flashphoner.js"></script></head>
<body><div id="local" style="width:320px;height:240px"></div><div id="remote" style="width:320px;height:240px"></div>
<script>
window.__ev = [];
const log = (what, status, info) => window.__ev.push({ what, status, info: info || null });
window.start = (urlServer, token, name, publish) => {
  Flashphoner.init({});
  const SESSION = Flashphoner.constants.SESSION_STATUS, STREAM = Flashphoner.constants.STREAM_STATUS;
  const options = { urlServer };
  if (token) options.custom = { token };
  const session = Flashphoner.createSession(options);
  session.on(SESSION.ESTABLISHED, () => {
    log('session', 'ESTABLISHED');
    const display = document.getElementById(publish ? 'local' : 'remote');
    const stream = session.createStream({ name, display });
    for (const s of [STREAM.PUBLISHING, STREAM.PLAYING, STREAM.FAILED, STREAM.STOPPED, STREAM.UNPUBLISHED]) {
      stream.on(s, (st) => log('stream', s, st && st.getInfo && st.getInfo()));
    }
    if (publish) stream.publish(); else stream.play();
  });
  session.on(SESSION.FAILED, () => log('session', 'FAILED'));
};
</script></body></html>`;

function streamEvent(page, status) {
  return poll(async () => (await page.evaluate(() => window.__ev)).find((e) => e.what === 'stream' && e.status === status),
    { timeout: 20_000, what: `stream status ${status}` });
}

test('Flashphoner SDK: custom.token publishes and plays; no token gets FAILED with the reason', { skip, timeout: 120_000 }, async (t) => {
  await withProtectedRtcdn(t, async ({ server, context }) => {
    const ws = `ws://127.0.0.1:${server.port}`;
    const url = pkg.serve(SDK_PAGE_PATH, SDK_PAGE);

    const stranger = await openLoggedPage(context, url);
    await stranger.evaluate(([u, n]) => window.start(u, null, n, true), [ws, 'tok1']);
    const failed = await streamEvent(stranger, 'FAILED');
    assert.match(failed.info, /^Unauthorized: a token is required to publish/, `FAILED info ${failed.info}`);

    const publisher = await openLoggedPage(context, url);
    await publisher.evaluate(([u, tk, n]) => window.start(u, tk, n, true), [ws, mint('--publish', 'tok*'), 'tok1']);
    await streamEvent(publisher, 'PUBLISHING');

    // A token for other names is refused with the grant it lacks.
    const wrong = await openLoggedPage(context, url);
    await wrong.evaluate(([u, tk, n]) => window.start(u, tk, n, false), [ws, mint('--play', 'other'), 'tok1']);
    const refused = await streamEvent(wrong, 'FAILED');
    assert.match(refused.info, /^Forbidden: the token does not grant play of "tok1"/, `FAILED info ${refused.info}`);

    const player = await openLoggedPage(context, url);
    await player.evaluate(([u, tk, n]) => window.start(u, tk, n, false), [ws, mint('--play', '*'), 'tok1']);
    await streamEvent(player, 'PLAYING');
    const st = await waitForSdkVideo(player, { containerSelector: '#remote', minFrames: 30 });
    t.diagnostic(`SDK player with a token decoded ${JSON.stringify(st)}`);
  });
});

test('built-in page: WHIP and WHEP with ?token= publish and play; no token shows the 401', { skip, timeout: 120_000 }, async (t) => {
  await withProtectedRtcdn(t, async ({ server, context }) => {
    const stranger = await openLoggedPage(context, `${server.url}/?stream=page1&autostart=publish`);
    await waitForState(stranger, 'publishState', 'error', { timeout: 20_000 });
    const why = await stranger.evaluate(() => window.rtcdn.publishError || window.rtcdn.lastError);
    assert.match(String(why), /401.*token is required to publish/, `publish error ${why}`);

    const publish = encodeURIComponent(mint('--publish', 'page*'));
    const pub = await openLoggedPage(context, `${server.url}/?stream=page1&autostart=publish&token=${publish}`);
    await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });

    const play = encodeURIComponent(mint('--play', 'page1'));
    const player = await openLoggedPage(context, `${server.url}/?stream=page1&autostart=play&token=${play}`);
    await waitForState(player, 'playState', 'playing', { timeout: 20_000 });
    const st = await waitForDecodedVideo(player, { minFrames: 30, timeout: 30_000 });
    t.diagnostic(`WHEP player with ?token= decoded ${JSON.stringify(st)}`);

    // The page's stop sends DELETE with the token as a Bearer header: the stream ends.
    await pub.click('#publish-stop');
    await waitForState(pub, 'publishState', 'stopped');
    await waitForState(player, 'playState', ['ended', 'error'], { timeout: 15_000 });
  });
});
