// Relays over TCP (issue 13, step 3): an origin and an edge in two namespaces, UDP dropped
// between them, `cdn.relay_transport = "auto"`.
//
//   bash tests/netns/run.sh                      (runs interop.test.mjs, turn.test.mjs, then this)
//   RTCDN_NETNS_ONLY='relay over TCP' bash tests/netns/run.sh
//
// The origin runs in the server namespace (HTTP on 10.77.0.1, media bound to 10.77.2.1, its end
// of the link to the TURN namespace); the edge runs in the TURN namespace (no coturn here),
// reached by the origin at 10.77.2.2 and by the client namespace at 10.77.3.1, and announces
// both as its candidates (UDP and ICE-TCP). nftables in the edge's namespace drops every UDP
// datagram in or out of its link to the origin (rtcdn0), and nothing else: the player's
// link (rtcdn1) passes UDP. Neither namespace forwards.
//
// Chromium in the server namespace publishes to the origin over WHIP; the origin relays "auto":
// its relay session checks the edge's UDP candidates, gets nothing back, and after 3 s the same
// relay moves to the edge's passive TCP candidate. A Chromium player in the client namespace
// plays from the edge over WHEP and must decode >= 60 frames. The origin's log must show the UDP
// attempt giving way to TCP and the relay connected over TCP, /api/cdn must say "tcp", and the
// edge's nftables counters must show the UDP it dropped.
//
// The server's rtcdn2 and the client's rtcdn3 (the links to that namespace) are up only during
// this test, as in turn.test.mjs.
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
const EDGE_NS = process.env.RTCDN_NETNS_TRN;
const SRV_IP = process.env.RTCDN_SRV_IP || '10.77.0.1';
const ORIGIN_MEDIA_IP = '10.77.2.1'; // the server's end of the link to the edge's namespace
const EDGE_IP = '10.77.2.2'; // the edge, on the origin's side (UDP dropped)
const EDGE_PLAYER_IP = '10.77.3.1'; // the edge, on the client's side
const ORIGIN = `http://${SRV_IP}:8290`;
const EDGE = `http://${EDGE_PLAYER_IP}:8390`; // the player's URL
const EDGE_API = `http://${EDGE_IP}:8390`; // the same node, from the server namespace (the test runner)
const RTCDN_BIN = path.resolve(process.env.RTCDN_BIN || path.join(REPO_ROOT, 'target/debug/rtcdn'));
const REAL_CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const TMP = mkdtempSync(path.join(os.tmpdir(), 'rtcdn-relaytcp-'));
const CDN_SECRET = `rtcdn-netns-test-${randomBytes(16).toString('hex')}`;

function probe(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.error ? r.error.message : (r.status === 0 ? null : `exit ${r.status}`);
}
const skip = process.env.RTCDN_NETNS_SKIP
  || (!EDGE_NS && 'no third namespace for the edge (run through tests/netns/run.sh)')
  || (!existsSync(REAL_CHROMIUM) && `${REAL_CHROMIUM} missing (scripts/test.sh installs chromium)`)
  || (probe('nft', ['--version']) && 'nft (nftables) missing: scripts/test.sh installs it')
  || false;

const chromiumWrapper = path.join(TMP, 'chromium-in-client-ns');
writeFileSync(chromiumWrapper, `#!/bin/sh\nexec ip netns exec '${CLI_NS}' '${REAL_CHROMIUM}' "$@"\n`);
chmodSync(chromiumWrapper, 0o755);
const { launchChromium, openPage, waitForState, waitForDecodedVideo, poll } = await import('../browser/harness.mjs');
const { startProc, killAll } = await import('./procs.mjs');

function sh(args) {
  const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
}

function links(state) {
  for (const [ns, dev] of [[SRV_NS, 'rtcdn2'], [CLI_NS, 'rtcdn3']]) sh(['ip', '-n', ns, 'link', 'set', dev, state]);
}

/** Drops UDP in and out of the edge's link to the origin (counted), or lifts the block. */
function blockOriginUdp(on) {
  const rules = ['table inet rtcdn_relay_noudp', 'delete table inet rtcdn_relay_noudp',
    ...(on ? ['table inet rtcdn_relay_noudp {',
      '  chain in { type filter hook input priority 0; policy accept; iifname "rtcdn0" meta l4proto udp counter drop comment "in"; }',
      '  chain out { type filter hook output priority 0; policy accept; oifname "rtcdn0" meta l4proto udp counter drop comment "out"; }',
      '}'] : [])].join('\n');
  const r = spawnSync('ip', ['netns', 'exec', EDGE_NS, 'nft', '-f', '-'], { input: rules + '\n', encoding: 'utf8' });
  assert.equal(r.status, 0, `nft in ${EDGE_NS}: ${r.stderr}`);
}

/** UDP datagrams the block dropped: { in, out }. */
function udpDropped() {
  const r = spawnSync('ip', ['netns', 'exec', EDGE_NS, 'nft', '-j', 'list', 'table', 'inet', 'rtcdn_relay_noudp'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `nft list in ${EDGE_NS}: ${r.stderr}`);
  const out = {};
  for (const o of JSON.parse(r.stdout).nftables) {
    const counter = o.rule && o.rule.comment && o.rule.expr.find((e) => e.counter);
    if (counter) out[o.rule.comment] = counter.counter.packets;
  }
  return out;
}

/** rtcdn with `toml`, in namespace `ns` (none: this one), answering GET / at `base`. */
async function startNode(name, ns, base, toml, args) {
  assert.ok(existsSync(RTCDN_BIN), `rtcdn binary not found at ${RTCDN_BIN} (cargo build, or set RTCDN_BIN)`);
  const file = path.join(TMP, `${name}.toml`);
  writeFileSync(file, toml);
  const argv = ['--config', file, ...args, '--log', process.env.RTCDN_LOG || 'info'];
  const [cmd, cmdArgs] = ns ? ['ip', ['netns', 'exec', ns, RTCDN_BIN, ...argv]] : [RTCDN_BIN, argv];
  const node = startProc(name, cmd, cmdArgs, { env: { NO_COLOR: '1', RUST_LOG_STYLE: 'never' } });
  await poll(async () => {
    if (node.exited) throw new Error(`${name} exited ${JSON.stringify(node.exited)}\n${node.text()}`);
    const res = await fetch(base + '/', { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 200;
  }, { timeout: 15_000, interval: 100, what: `${name} answering at ${base}` });
  return node;
}

async function json(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  assert.equal(res.status, 200, url);
  return res.json();
}

let publisher, player;
after(async () => {
  await publisher?.close().catch(() => {});
  await player?.close().catch(() => {});
  killAll();
  rmSync(TMP, { recursive: true, force: true });
});

test('relay over TCP: with UDP dropped between origin and edge, relay_transport = "auto" moves the relay to ICE-TCP and a Chromium player on the edge decodes',
  { skip, timeout: 120_000 }, async (t) => {
    links('up');
    let origin, edge;
    try {
      await poll(() => ['rtcdn2', 'rtcdn3'].every((dev, i) =>
        /state UP/.test(spawnSync('ip', ['-n', i ? CLI_NS : SRV_NS, 'link', 'show', dev], { encoding: 'utf8' }).stdout)),
      { timeout: 5000, interval: 100, what: 'links to the edge namespace up' });
      blockOriginUdp(true);
      edge = await startNode('rtcdn edge', EDGE_NS, EDGE_API, [
        '[media]', `announce = ["${EDGE_IP}", "${EDGE_PLAYER_IP}"]`, 'tcp = true',
        '[cdn]', 'role = "edge"', `secret = "${CDN_SECRET}"`, ''].join('\n'),
      ['--http', '0.0.0.0:8390', '--media-bind', '0.0.0.0', '--udp-port-base', '38100', '--media-threads', '1']);
      origin = await startNode('rtcdn origin', null, ORIGIN, [
        '[cdn]', 'role = "origin"', 'load_balancing_enabled = true', `secret = "${CDN_SECRET}"`,
        'relay_transport = "auto"',
        '[[cdn.nodes]]', 'id = 1', `host = "${EDGE_IP}"`, 'ws = 8390', ''].join('\n'),
      ['--http', `${SRV_IP}:8290`, '--media-bind', ORIGIN_MEDIA_IP, '--udp-port-base', '38000', '--media-threads', '2']);

      publisher = await launchChromium({ executablePath: REAL_CHROMIUM, args: [`--unsafely-treat-insecure-origin-as-secure=${ORIGIN}`] });
      const pub = await openPage(publisher, `${ORIGIN}/?stream=relaytcp&autostart=publish&codec=VP8`);
      await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });

      // The relay comes up over TCP, after its UDP attempt.
      const relay = await poll(async () => {
        const view = await json(`${ORIGIN}/api/cdn`);
        const r = view.edges[0].relays.find((x) => x.stream === 'relaytcp');
        return r && r.state === 'up' ? r : false;
      }, { timeout: 30_000, interval: 250, what: 'the relay to the edge up' });
      t.diagnostic(`origin /api/cdn relay: ${JSON.stringify(relay)}`);
      assert.equal(relay.transport, 'tcp');
      const log = origin.lines.join('\n');
      assert.match(log, /relay session started.*transport=udp/, 'the relay tried UDP first');
      assert.match(log, /UDP to the edge did not connect, trying TCP/);
      assert.match(log, /relay session connected.*transport=tcp/);
      assert.ok(log.indexOf('trying TCP') > log.search(/relay session started.*transport=udp/), 'UDP, then TCP');
      assert.doesNotMatch(log, /relay session connected.*transport=udp/);

      player = await launchChromium({ executablePath: chromiumWrapper, args: [`--unsafely-treat-insecure-origin-as-secure=${EDGE}`] });
      const play = await openPage(player, `${EDGE}/?stream=relaytcp&autostart=play`);
      await waitForState(play, 'playState', 'playing', { timeout: 20_000 });
      const st = await waitForDecodedVideo(play, { minFrames: 60, timeout: 30_000 });
      t.diagnostic(`Chromium on the edge decoded: ${JSON.stringify(st)}`);
      assert.equal(st.mimeType.toLowerCase(), 'video/vp8');

      // The stream keeps flowing over TCP: wait for a few hundred frames each way (the player
      // can decode its 60 frames from the keyframe cache before that many went through).
      const tcp = (s, k) => s.cores.reduce((n, c) => n + ((c.tcp || {})[k] || 0), 0);
      let os, es;
      await poll(async () => {
        [os, es] = [await json(`${ORIGIN}/api/stats`), await json(`${EDGE_API}/api/stats`)];
        return tcp(os, 'tx_frames') > 300 && tcp(es, 'rx_frames') > 300;
      }, { timeout: 15_000, interval: 250, what: '300 frames over the relay\'s TCP connection' }).catch(() => {});
      const dropped = udpDropped();
      t.diagnostic(`UDP dropped between origin and edge: ${JSON.stringify(dropped)}; origin tcp connects ${tcp(os, 'connects')}, ` +
        `connect failures ${tcp(os, 'connect_failures')}, frames out ${tcp(os, 'tx_frames')}, dropped ${tcp(os, 'tx_dropped')}; ` +
        `edge tcp accepted ${tcp(es, 'accepted')}, frames in ${tcp(es, 'rx_frames')}`);
      assert.ok(dropped.in > 0, `the origin's UDP checks reached the block: ${JSON.stringify(dropped)}`);
      assert.equal(tcp(os, 'connects'), 1);
      assert.ok(tcp(es, 'accepted') >= 1);
      assert.ok(tcp(os, 'tx_frames') > 300 && tcp(es, 'rx_frames') > 300, 'the media came over TCP');
    } catch (e) {
      for (const n of [origin, edge]) if (n) e.message += `\n--- ${n.name} ---\n${n.text(120)}`;
      throw e;
    } finally {
      await publisher?.close().catch(() => {});
      await player?.close().catch(() => {});
      publisher = player = undefined;
      await origin?.stop();
      await edge?.stop();
      blockOriginUdp(false);
      links('down');
    }
  });
