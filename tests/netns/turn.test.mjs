// TURN handed to clients (issue 13, step 2), with a real coturn in its own namespace.
//
//   bash tests/netns/run.sh                      (runs interop.test.mjs, then this file)
//   RTCDN_NETNS_ONLY='TURN' bash tests/netns/run.sh
//
// coturn (Debian's `turnserver`, `use-auth-secret` with a static-auth-secret of this run's own)
// runs in the TURN namespace, listening on 10.77.3.1 (the client's side) and relaying from
// 10.77.2.2 to rtcdn, whose media is bound to 10.77.2.1 only (the server's side of the TURN
// link). The client namespace has no route to 10.77.2.1 (10.77.0.1, its HTTP, is another
// address; neither the server nor the TURN namespace forwards), so a player there can only get
// media through coturn; coturn itself may relay to 10.77.2.1 and nothing else
// (`denied-peer-ip` everything, `allowed-peer-ip` rtcdn).
//
// rtcdn knows the same secret as `[[ice.servers]] secret`. A Chromium player in the client
// namespace opens the built-in page with `?relay=1` (`iceTransportPolicy: "relay"`): the page
// learns the servers from the Link headers of its OPTIONS on the WHEP URL, with credentials
// rtcdn minted, and nothing else. Played twice: over TURN/UDP (TCP to coturn dropped in the
// client namespace) and over TURN/TCP (UDP dropped). Each run asserts >= 60 decoded frames, a
// selected pair whose local candidate is a relay one of that protocol, and coturn's log showing
// the minted username's allocation and the media it relayed. Then a Flashphoner Web SDK page
// (the package's flashphoner.js, served from the server namespace) does what the README shows:
// reads the Link headers of an OPTIONS and passes them as createSession's
// `mediaOptions.iceServers` (with iceTransportPolicy relay), and plays over the WebSocket
// protocol via TURN/UDP. The publisher is Chromium in the server namespace, straight to
// 10.77.2.1.
//
// The server's rtcdn2 and the client's rtcdn3 (the links to coturn) are up only during this
// test, so the other tests' clients see the interfaces they always saw.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '../..');
const SRV_NS = process.env.RTCDN_NETNS_SRV;
const CLI_NS = process.env.RTCDN_NETNS_CLI;
const TRN_NS = process.env.RTCDN_NETNS_TRN;
const SRV_IP = process.env.RTCDN_SRV_IP || '10.77.0.1';
const MEDIA_IP = '10.77.2.1'; // the server's end of the link to coturn
const TURN_LISTEN = '10.77.3.1'; // coturn, on the client's side
const TURN_RELAY = '10.77.2.2'; // coturn, on the server's side
const HTTP_PORT = 8090;
const BASE = `http://${SRV_IP}:${HTTP_PORT}`;
const RTCDN_BIN = path.resolve(process.env.RTCDN_BIN || path.join(REPO_ROOT, 'target/debug/rtcdn'));
const REAL_CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const TMP = mkdtempSync(path.join(os.tmpdir(), 'rtcdn-turn-'));
const TURN_SECRET = randomBytes(24).toString('hex');

function probe(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.error ? r.error.message : (r.status === 0 ? null : `exit ${r.status}`);
}
const skip = process.env.RTCDN_NETNS_SKIP
  || (!TRN_NS && 'no TURN namespace (run through tests/netns/run.sh)')
  || (!existsSync(REAL_CHROMIUM) && `${REAL_CHROMIUM} missing (scripts/test.sh installs chromium)`)
  || (probe('turnserver', ['--version']) && 'turnserver (coturn) missing: scripts/test.sh installs it')
  || (probe('nft', ['--version']) && 'nft (nftables) missing: scripts/test.sh installs it')
  || false;

const chromiumWrapper = path.join(TMP, 'chromium-in-client-ns');
writeFileSync(chromiumWrapper, `#!/bin/sh\nexec ip netns exec '${CLI_NS}' '${REAL_CHROMIUM}' "$@"\n`);
chmodSync(chromiumWrapper, 0o755);
const { launchChromium, openPage, waitForState, waitForDecodedVideo, poll, startPackageServer, newLoopbackContext,
  openLoggedPage, waitForSdkVideo } = await import('../browser/harness.mjs');

// ---- processes ----------------------------------------------------------------------------
const { startProc: start, killAll } = await import('./procs.mjs');
/** A process whose output is plain (no colours). */
const startProc = (name, cmd, args) => start(name, cmd, args, { env: { NO_COLOR: '1' }, keep: 20000 });

function sh(args) {
  const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
}

function links(state) {
  for (const [ns, dev] of [[SRV_NS, 'rtcdn2'], [CLI_NS, 'rtcdn3']]) sh(['ip', '-n', ns, 'link', 'set', dev, state]);
}

/** Drops `proto` (udp or tcp) from the client namespace to coturn: the other one must carry it. */
function blockToTurn(proto) {
  const rules = ['table inet rtcdn_turn', 'delete table inet rtcdn_turn', 'table inet rtcdn_turn {',
    '  chain out {', '    type filter hook output priority 0; policy accept;',
    ...(proto ? [`    ip daddr ${TURN_LISTEN} meta l4proto ${proto} counter drop`] : []),
    '  }', '}'].join('\n');
  const r = spawnSync('ip', ['netns', 'exec', CLI_NS, 'nft', '-f', '-'], { input: rules + '\n', encoding: 'utf8' });
  assert.equal(r.status, 0, `nft in ${CLI_NS}: ${r.stderr}`);
}

async function startCoturn() {
  const turn = startProc('coturn', 'ip', ['netns', 'exec', TRN_NS, 'turnserver', '-n',
    `--listening-ip=${TURN_LISTEN}`, `--relay-ip=${TURN_RELAY}`, '--listening-port=3478',
    '--use-auth-secret', `--static-auth-secret=${TURN_SECRET}`, '--realm=rtcdn.test',
    '--no-tls', '--no-dtls', '--no-cli', '--fingerprint', '--no-multicast-peers',
    // coturn may relay to rtcdn's media address and nowhere else.
    '--denied-peer-ip=0.0.0.0-255.255.255.255', `--allowed-peer-ip=${MEDIA_IP}`,
    '--log-file=stdout', '--simple-log', '--verbose',
    `--pidfile=${path.join(TMP, 'turnserver.pid')}`, `--db=${path.join(TMP, 'turndb')}`]);
  await poll(() => {
    if (turn.exited) throw new Error(`coturn exited ${JSON.stringify(turn.exited)}\n${turn.text()}`);
    return turn.lines.some((l) => /UDP listener opened on/.test(l)) && turn.lines.some((l) => /TCP listener opened on/.test(l));
  }, { timeout: 10_000, interval: 100, what: 'coturn listening' });
  return turn;
}

async function startRtcdn() {
  const config = path.join(TMP, 'rtcdn.toml');
  writeFileSync(config, [
    '[[ice.servers]]',
    `urls = ["turn:${TURN_LISTEN}:3478?transport=udp", "turn:${TURN_LISTEN}:3478?transport=tcp"]`,
    `secret = "${TURN_SECRET}"`,
    'ttl_secs = 600', ''].join('\n'));
  const srv = startProc('rtcdn', RTCDN_BIN, ['--config', config, '--http', `${SRV_IP}:${HTTP_PORT}`,
    '--media-bind', MEDIA_IP, '--udp-port-base', '37000', '--media-threads', '2', '--log', process.env.RTCDN_LOG || 'info']);
  await poll(async () => {
    if (srv.exited) throw new Error(`rtcdn exited ${JSON.stringify(srv.exited)}\n${srv.text()}`);
    const res = await fetch(BASE + '/', { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  }, { timeout: 15_000, interval: 100, what: `rtcdn answering at ${BASE}` });
  return srv;
}

/** The README's recipe for a Flashphoner Web SDK page: the ICE servers of the Link headers of an
 * OPTIONS on the stream's WHEP URL, passed as createSession's mediaOptions (here with
 * iceTransportPolicy relay, to prove they are used). */
const SDK_PAGE_PATH = '/__rtcdn_test__/turn_sdk_player.html';
const SDK_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>SDK player via TURN</title>
<script src="/flashphoner.js"></script></head>
<body><div id="remote" style="width:320px;height:240px"></div>
<script>
window.__ev = [];
function iceServersOf(header) {
  const out = [];
  for (const entry of (header || '').split(/,\\s*(?=<)/)) {
    const m = /^\\s*<([^>]*)>(.*)$/.exec(entry);
    if (!m || !/;\\s*rel="ice-server"/.test(m[2])) continue;
    const p = (k) => (new RegExp(';\\\\s*' + k + '="([^"]*)"').exec(m[2]) || [])[1];
    out.push(p('username') ? { urls: m[1], username: p('username'), credential: p('credential') } : { urls: m[1] });
  }
  return out;
}
window.start = async (http, ws, name) => {
  const res = await fetch(http + '/whep/' + encodeURIComponent(name), { method: 'OPTIONS' });
  const iceServers = window.__servers = iceServersOf(res.headers.get('Link'));
  Flashphoner.init({ preferredMediaProvider: 'WebRTC' });
  const SESSION = Flashphoner.constants.SESSION_STATUS, STREAM = Flashphoner.constants.STREAM_STATUS;
  const session = Flashphoner.createSession({ urlServer: ws, mediaOptions: { iceServers, iceTransportPolicy: 'relay' } });
  session.on(SESSION.ESTABLISHED, () => {
    const stream = session.createStream({ name, display: document.getElementById('remote') });
    for (const s of [STREAM.PLAYING, STREAM.FAILED, STREAM.STOPPED]) stream.on(s, (st) => window.__ev.push(s === STREAM.PLAYING ? s : s + ': ' + (st && st.getInfo && st.getInfo())));
    window.__stream = stream;
    stream.play();
  });
  session.on(SESSION.FAILED, () => window.__ev.push('SESSION_FAILED'));
};
</script></body></html>`;

/** The selected ICE pair of a peer connection (`pcExpr`, evaluated in the page). */
function selectedPairOf(page, pcExpr) {
  return page.evaluate(async (expr) => {
    const pc = (0, eval)(expr);
    const rep = await pc.getStats();
    let pair = null;
    rep.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = rep.get(r.selectedCandidatePairId); });
    if (!pair) return null;
    const local = rep.get(pair.localCandidateId), remote = rep.get(pair.remoteCandidateId);
    return { local: local.candidateType, relayProtocol: local.relayProtocol, localAddress: local.address,
      localUrl: local.url, remote: `${remote.address}:${remote.port}`, bytesReceived: pair.bytesReceived };
  }, pcExpr);
}

/** Waits for coturn's report of what `username`'s allocation relayed from rtcdn (>= 50 kB)
 * once its client let go, in the log lines from `from` on; returns [session, bytes, closed line]. */
async function coturnCarried(turn, from, username) {
  const log = () => turn.lines.slice(from);
  const m = await poll(() => log().map((l) => /session (\d+): peer usage: realm=<[^>]*>, username=<([^>]*)>, rp=\d+, rb=(\d+)/.exec(l))
    .find((x) => x && x[2] === username && Number(x[3]) >= 50_000),
  { timeout: 15_000, interval: 250, what: `coturn: peer usage >= 50 kB for ${username}` });
  return [m[1], Number(m[3]), log().find((l) => l.includes(`session ${m[1]}: closed`)) || ''];
}

let publisher, player, pkg;
after(async () => {
  await publisher?.close().catch(() => {});
  await player?.close().catch(() => {});
  await pkg?.close().catch(() => {});
  killAll();
  rmSync(TMP, { recursive: true, force: true });
});

test('TURN: Chromium (iceTransportPolicy relay) plays over WHEP via coturn over UDP and over TCP, and through the Flashphoner SDK, with credentials from rtcdn\'s Link headers',
  { skip, timeout: 180_000 }, async (t) => {
    links('up');
    let turn, srv;
    try {
      await poll(() => ['rtcdn2', 'rtcdn3'].every((dev, i) =>
        /state UP/.test(spawnSync('ip', ['-n', i ? CLI_NS : SRV_NS, 'link', 'show', dev], { encoding: 'utf8' }).stdout)),
      { timeout: 5000, interval: 100, what: 'links to coturn up' });
      turn = await startCoturn();
      srv = await startRtcdn();

      // The OPTIONS and POST answers name both URLs with the same kind of minted credentials.
      const res = await fetch(`${BASE}/whep/anything`, { method: 'OPTIONS' });
      const link = res.headers.get('link');
      t.diagnostic(`OPTIONS /whep Link: ${link}`);
      assert.match(link, new RegExp(`^<turn:${TURN_LISTEN}:3478\\?transport=udp>; rel="ice-server"; username="(\\d+):[0-9a-f]{16}"; credential="[A-Za-z0-9+/]{27}="; credential-type="password", <turn:${TURN_LISTEN}:3478\\?transport=tcp>; rel="ice-server"; `));
      const expiry = Number(/username="(\d+):/.exec(link)[1]);
      const now = Date.now() / 1000;
      assert.ok(Math.abs(expiry - (now + 600)) < 30, `expiry ${expiry} is not now + ttl_secs (${now} + 600)`);

      publisher = await launchChromium({ executablePath: REAL_CHROMIUM, args: [`--unsafely-treat-insecure-origin-as-secure=${BASE}`] });
      const pub = await openPage(publisher, `${BASE}/?stream=turn&autostart=publish&codec=VP8`);
      await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
      const whipLinks = await pub.evaluate(() => window.rtcdn.publishLinks);
      assert.match(whipLinks || '', /rel="ice-server"; username="\d+:[0-9a-f]{16}"/, 'the WHIP 201 carries Link headers');

      // The SDK page's origin must be a secure context for the SDK to pick WebRTC.
      pkg = await startPackageServer(undefined, { host: SRV_IP });
      player = await launchChromium({ executablePath: chromiumWrapper, args: [`--unsafely-treat-insecure-origin-as-secure=${pkg.url}`] });
      for (const proto of ['udp', 'tcp']) {
        blockToTurn(proto === 'udp' ? 'tcp' : 'udp');
        const before = turn.lines.length;
        const page = await openPage(player, `${BASE}/?stream=turn&autostart=play&relay=1`);
        try {
          await waitForState(page, 'playState', 'playing', { timeout: 30_000 });
          const st = await waitForDecodedVideo(page, { minFrames: 60, timeout: 30_000 });
          const pair = await selectedPairOf(page, 'window.rtcdn.playPc');
          const servers = await page.evaluate(() => window.rtcdn.playIceServers);
          const postLinks = await page.evaluate(() => window.rtcdn.playLinks);
          t.diagnostic(`TURN/${proto}: decoded ${JSON.stringify(st)}; selected pair ${JSON.stringify(pair)}`);
          assert.equal(st.mimeType.toLowerCase(), 'video/vp8');
          assert.ok(pair, 'a selected candidate pair');
          assert.equal(pair.local, 'relay');
          assert.equal(pair.relayProtocol, proto);
          assert.equal(pair.remote, `${MEDIA_IP}:${pair.remote.split(':')[1]}`);
          // The page used what the OPTIONS handed it, and nothing else.
          assert.equal(servers.length, 2);
          assert.deepEqual(servers.map((s) => s.urls), [`turn:${TURN_LISTEN}:3478?transport=udp`, `turn:${TURN_LISTEN}:3478?transport=tcp`]);
          assert.match(postLinks || '', /rel="ice-server"; username="\d+:[0-9a-f]{16}"/, 'the WHEP 201 carries Link headers');
          // coturn allocated for that username, over that transport, and relayed media.
          const log = () => turn.lines.slice(before);
          const username = servers[0].username;
          await poll(() => log().some((l) => l.includes(username) && /ALLOCATE processed, success/.test(l)),
            { timeout: 5000, interval: 200, what: `coturn: ALLOCATE success for ${username}` });
          assert.ok(log().some((l) => l.includes(username) && /CHANNEL_BIND processed, success/.test(l)),
            'coturn bound a channel to rtcdn for the minted username');
          // Once the player stops, coturn reports what each allocation relayed: the one that
          // carried the media received (rb) the video from rtcdn (peer usage), over `proto`.
          await page.evaluate(() => window.rtcdn.stopPlay()).catch(() => {});
          await page.close().catch(() => {});
          const [session, bytes, closed] = await coturnCarried(turn, before, username);
          t.diagnostic(`coturn (TURN/${proto}): session ${session} relayed ${bytes} bytes from rtcdn; ${closed}`);
          // coturn's reason for closing a TCP allocation names TCP, however the client left
          // ("TCP connection closed by client", or "TCP socket buffer operation error" after a
          // reset, as Chromium sometimes does); a UDP allocation ends by "allocation timeout".
          assert.equal(/reason: TCP /.test(closed), proto === 'tcp', `session ${session} over ${proto}: ${closed}`);
        } catch (e) {
          e.message += `\n--- page console ---\n${page.consoleLines.join('\n')}\n--- coturn ---\n${turn.lines.slice(before).slice(-80).join('\n')}`;
          throw e;
        } finally {
          await page.evaluate(() => window.rtcdn.stopPlay()).catch(() => {});
          await page.close().catch(() => {});
        }
      }

      // The Flashphoner Web SDK, as the README shows it: Link headers -> mediaOptions.iceServers.
      blockToTurn('tcp');
      const context = await newLoopbackContext(player, { allowHosts: [SRV_IP] });
      const sdk = await openLoggedPage(context, pkg.serve(SDK_PAGE_PATH, SDK_PAGE));
      const before = turn.lines.length;
      try {
        await sdk.evaluate(([http, ws]) => window.start(http, ws, 'turn'), [BASE, `ws://${SRV_IP}:${HTTP_PORT}`]);
        await poll(() => sdk.evaluate(() => window.__ev.includes('PLAYING') || (window.__ev.length && window.__ev.join())),
          { timeout: 30_000, interval: 200, what: 'SDK stream PLAYING' }).then((r) => assert.equal(r, true, `SDK events: ${r}`));
        const st = await waitForSdkVideo(sdk, { containerSelector: '#remote', minFrames: 60 });
        const pair = await selectedPairOf(sdk, 'window.__pcs.find((pc) => pc.connectionState !== "closed")');
        const servers = await sdk.evaluate(() => window.__servers);
        t.diagnostic(`SDK via TURN/udp: decoded ${JSON.stringify(st)}; selected pair ${JSON.stringify(pair)}`);
        assert.equal(servers.length, 2);
        assert.equal(pair.local, 'relay');
        assert.equal(pair.relayProtocol, 'udp');
        await sdk.evaluate(() => window.__stream.stop());
        await sdk.close();
        const [session, bytes] = await coturnCarried(turn, before, servers[0].username);
        t.diagnostic(`coturn (SDK): session ${session} relayed ${bytes} bytes from rtcdn`);
      } catch (e) {
        e.message += `\n--- SDK frames ---\n${(sdk.wsFrames || []).filter((f) => f.dir === '>').map((f) => f.text.slice(0, 3000)).join('\n')}`;
        e.message += `\n--- SDK page console ---\n${sdk.consoleLines.join('\n')}\n--- coturn ---\n${turn.lines.slice(before).slice(-60).join('\n')}`;
        throw e;
      } finally {
        await context.close().catch(() => {});
      }
    } catch (e) {
      if (srv) e.message += `\n--- rtcdn ---\n${srv.text(80)}`;
      throw e;
    } finally {
      blockToTurn(null);
      await srv?.stop();
      await turn?.stop();
      links('down');
    }
  });
