// Shared helpers for rtcdn's browser end-to-end tests.
// Only ever talks to 127.0.0.1, unless a caller names other hosts (the netns tests name their
// own namespaces' addresses).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, after } from 'node:test';
import { chromium } from 'playwright-core';

export const TESTS_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(TESTS_DIR, '../..');
export const INDEX_HTML = path.join(REPO_ROOT, 'src/web/index.html');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Why an end-to-end test file is skipped, or false: `RTCDN_SKIP_E2E` is set, or one of the
 * programs in `needs` (e.g. 'ffmpeg') does not run. For node:test's `{ skip }`.
 */
export function e2eSkip({ needs = [] } = {}) {
  if (process.env.RTCDN_SKIP_E2E) return 'RTCDN_SKIP_E2E is set';
  const missing = needs.find((program) => spawnSync(program, ['-version']).status !== 0);
  return missing ? `${missing} is not installed` : false;
}

/** The last `lines` lines of a started rtcdn's log, as a section for a failure message. */
export function logTail(server, { lines = 100, label = 'rtcdn' } = {}) {
  const argv = server.argv ? ` (${server.argv.join(' ')})` : '';
  return `\n--- ${label} logs${argv} ---\n${server.logText().split('\n').slice(-lines).join('\n')}`;
}

/** Polls `fn` until it returns a truthy value; throws with the last value seen. */
export async function poll(fn, { timeout = 10_000, interval = 200, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = `threw: ${e && e.message}`;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last value: ${JSON.stringify(last)}`);
    }
    await sleep(interval);
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function udpFree(port) {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => { s.close(); resolve(false); });
    s.bind(port, '0.0.0.0', () => s.close(() => resolve(true)));
  });
}

function tcpFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '0.0.0.0', () => srv.close(() => resolve(true)));
  });
}

/**
 * A base port such that base..base+span-1 were all free a moment ago for UDP and for TCP (a
 * core's ICE-TCP listener takes its UDP port's number). Drawn below Linux's ephemeral range
 * (32768-60999), where the kernel hands out ports to outgoing connections: a base in it could be
 * taken by one between this check and rtcdn's bind.
 */
export async function freeUdpBase(span = 8) {
  for (let i = 0; i < 50; i++) {
    const base = 20000 + 10 * Math.floor(Math.random() * 1270);
    let ok = true;
    for (let p = base; p < base + span && ok; p++) ok = (await udpFree(p)) && (await tcpFree(p));
    if (ok) return base;
  }
  throw new Error('no free port range found');
}

const children = new Set();
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL'); } catch {} } });

export function rtcdnBin() {
  return process.env.RTCDN_BIN
    ? path.resolve(process.env.RTCDN_BIN)
    : path.resolve(TESTS_DIR, '../../target/debug/rtcdn');
}

/**
 * Spawns `bin argv` and waits until `GET url/` answers. Returns { url, argv, logs, logText(), stop() }.
 * `stop()` sends SIGTERM (SIGKILL after 3 s) and resolves once the process has exited.
 */
async function spawnRtcdn(bin, argv, url, { env = {}, readyTimeout = 15_000 } = {}) {
  const child = spawn(bin, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const logs = [];
  const keep = (src) => (buf) => {
    for (const line of buf.toString().split('\n')) if (line) logs.push(`[${src}] ${line}`);
    if (logs.length > 5000) logs.splice(0, logs.length - 5000);
  };
  child.stdout.on('data', keep('out'));
  child.stderr.on('data', keep('err'));
  let exited = null;
  const exitPromise = new Promise((resolve) => child.on('exit', (code, signal) => {
    exited = { code, signal };
    children.delete(child);
    resolve(exited);
  }));
  const logText = () => logs.join('\n');
  const stop = async () => {
    if (exited) return exited;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    const r = await exitPromise;
    clearTimeout(t);
    return r;
  };
  try {
    const ready = poll(async () => {
      if (exited) return true; // reported below
      const res = await fetch(url + '/', { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return res.status < 500;
    }, { timeout: readyTimeout, interval: 100, what: `GET / on rtcdn at ${url}` });
    await Promise.race([ready, exitPromise]);
    if (exited) throw new Error(`rtcdn exited before answering GET / (${JSON.stringify(exited)})`);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n${bin} ${argv.join(' ')}\n--- rtcdn logs ---\n${logText()}`);
  }
  return { url, argv, logs, logText, stop, pid: child.pid, get exited() { return exited; } };
}

/**
 * Spawns the rtcdn server on a free loopback HTTP port and a free-ish UDP port base,
 * and waits until `GET /` answers. Returns { url, port, udpPortBase, logs, logText(), stop() }.
 * Extra CLI flags go in `args`; `RTCDN_LOG` (env) adds `--log LEVEL`.
 */
export async function startRtcdn({ args = [], env = {}, readyTimeout = 15_000 } = {}) {
  const bin = rtcdnBin();
  if (!existsSync(bin)) {
    throw new Error(`rtcdn binary not found at ${bin} (build it with cargo build, or set RTCDN_BIN)`);
  }
  const port = await freeTcpPort();
  const udpPortBase = await freeUdpBase();
  const argv = ['--http', `127.0.0.1:${port}`, '--udp-port-base', String(udpPortBase)];
  if (process.env.RTCDN_LOG) argv.push('--log', process.env.RTCDN_LOG);
  argv.push(...args);
  const server = await spawnRtcdn(bin, argv, `http://127.0.0.1:${port}`, { env, readyTimeout });
  return Object.assign(server, { port, udpPortBase });
}

/** `http.listen` ("host:port") of an rtcdn TOML config, or null when the file does not set it. */
export function configHttpListen(configPath) {
  let section = '';
  for (const raw of readFileSync(configPath, 'utf8').split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    const sec = line.match(/^\[+\s*([^\]]+?)\s*\]+$/);
    if (sec) { section = sec[1]; continue; }
    const kv = section === 'http' && line.match(/^listen\s*=\s*"([^"]+)"$/);
    if (kv) return kv[1];
  }
  return null;
}

function tcpPortFree(host, port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/**
 * Spawns `rtcdn --config <absolute path>` exactly as a user would (the config's own fixed ports),
 * and waits until `GET /` answers on the config's http.listen. Refuses to start, naming the port,
 * when that port is already taken (another rtcdn, or a test that did not stop its server).
 * `RTCDN_LOG` (env) adds `--log LEVEL`. Returns { url, port, configPath, argv, logs, logText(), stop() }.
 */
export async function startRtcdnWithConfig(configPath, { args = [], env = {}, readyTimeout = 15_000 } = {}) {
  const bin = rtcdnBin();
  if (!existsSync(bin)) {
    throw new Error(`rtcdn binary not found at ${bin} (build it with cargo build, or set RTCDN_BIN)`);
  }
  const abs = path.resolve(REPO_ROOT, configPath);
  const listen = configHttpListen(abs) || '127.0.0.1:8080';
  const m = listen.match(/^(.*):(\d+)$/);
  if (!m) throw new Error(`${abs}: cannot read http.listen ${JSON.stringify(listen)}`);
  const host = m[1].replace(/^\[|\]$/g, '');
  const port = Number(m[2]);
  const connectHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  if (!(await tcpPortFree(connectHost, port))) {
    throw new Error(`${abs} listens on ${listen}, which is already taken on this host: stop whatever holds it`);
  }
  const argv = ['--config', abs];
  if (process.env.RTCDN_LOG) argv.push('--log', process.env.RTCDN_LOG);
  argv.push(...args);
  const server = await spawnRtcdn(bin, argv, `http://${connectHost}:${port}`, { env, readyTimeout });
  return Object.assign(server, { port, configPath: abs });
}

export const CHROMIUM_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Headless Debian Chromium with a fake camera/mic and loopback ICE allowed. `executablePath`
 * (default CHROMIUM_BIN, or /usr/bin/chromium) may be a wrapper that execs Chromium, e.g. in
 * another network namespace. */
export async function launchChromium({ headless = true, args = [], executablePath = CHROMIUM } = {}) {
  if (!existsSync(executablePath)) {
    throw new Error(`${executablePath} not found: install Debian's chromium package (scripts/test.sh does)`);
  }
  return chromium.launch({ executablePath, headless, args: [...CHROMIUM_ARGS, ...args] });
}

/** Opens a page and records its console output and page errors in page.consoleLines. */
export async function openPage(browser, url) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.consoleLines = [];
  page.on('console', (m) => page.consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLines.push(`[pageerror] ${e.message}`));
  if (url) await page.goto(url);
  return page;
}

/**
 * Video RTP stats of an RTCPeerConnection the page exposes (default: the player's).
 * Returns { framesDecoded, framesEncoded, frameWidth, frameHeight, mimeType, bytes } or null.
 */
export function videoStats(page, pcExpr = 'window.rtcdn.playPc', type = 'inbound-rtp') {
  return page.evaluate(async ([expr, type]) => {
    const pc = (0, eval)(expr);
    if (!pc || pc.connectionState === 'closed') return null;
    const rep = await pc.getStats();
    let v = null;
    rep.forEach((r) => { if (r.type === type && r.kind === 'video' && (!v || (r.framesDecoded || r.framesEncoded || 0) > (v.framesDecoded || v.framesEncoded || 0))) v = r; });
    if (!v) return null;
    const codec = v.codecId && rep.get(v.codecId);
    return {
      framesDecoded: v.framesDecoded || 0, framesEncoded: v.framesEncoded || 0,
      frameWidth: v.frameWidth || 0, frameHeight: v.frameHeight || 0,
      mimeType: codec ? codec.mimeType : null,
      bytes: v.bytesReceived ?? v.bytesSent ?? 0,
    };
  }, [pcExpr, type]);
}

/** The page's player's audio as Chromium received and decoded it (null before any). */
export function audioStats(page, pcExpr = 'window.rtcdn.playPc') {
  return page.evaluate(async (expr) => {
    const pc = (0, eval)(expr);
    if (!pc || pc.connectionState === 'closed') return null;
    const rep = await pc.getStats();
    let a = null;
    rep.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'audio') a = r; });
    if (!a) return null;
    const codec = a.codecId && rep.get(a.codecId);
    return {
      packetsReceived: a.packetsReceived || 0, packetsLost: a.packetsLost || 0,
      totalSamplesReceived: a.totalSamplesReceived || 0, concealedSamples: a.concealedSamples || 0,
      audioLevel: a.audioLevel || 0, totalAudioEnergy: a.totalAudioEnergy || 0,
      mimeType: codec ? codec.mimeType : null,
    };
  }, pcExpr);
}

/** Waits until the page's player has decoded >= minFrames with a non-zero size; returns the stats. */
export async function waitForDecodedVideo(page, { minFrames = 60, timeout = 30_000, pcExpr, videoSelector = '#play-video' } = {}) {
  let last = null;
  try {
    return await poll(async () => {
      const s = await videoStats(page, pcExpr);
      const vw = videoSelector ? await page.$eval(videoSelector, (v) => v.videoWidth) : 1;
      if (s) s.videoWidth = vw;
      last = s;
      return s && vw > 0 && s.frameWidth > 0 && s.framesDecoded >= minFrames ? s : false;
    }, { timeout, interval: 250, what: `>= ${minFrames} decoded frames` });
  } catch (e) {
    throw new Error(`${e.message}; last video stats: ${JSON.stringify(last)}\nconsole:\n${(page.consoleLines || []).join('\n')}`);
  }
}

/** Waits until window.rtcdn[key] is one of `states`; returns the state. */
export function waitForState(page, key, states, { timeout = 15_000 } = {}) {
  const want = Array.isArray(states) ? states : [states];
  return poll(() => page.evaluate(([k, w]) => {
    const s = window.rtcdn && window.rtcdn[k];
    return w.includes(s) ? s : false;
  }, [key, want]), { timeout, interval: 100, what: `rtcdn.${key} in ${JSON.stringify(want)}` })
    .catch(async (e) => {
      const st = await page.evaluate(() => window.rtcdn && {
        publishState: window.rtcdn.publishState, playState: window.rtcdn.playState, lastError: window.rtcdn.lastError,
      }).catch(() => null);
      throw new Error(`${e.message}\npage state: ${JSON.stringify(st)}\nconsole:\n${(page.consoleLines || []).join('\n')}`);
    });
}

/**
 * A tiny static server on 127.0.0.1 serving the built-in page at `/` (read fresh each time).
 * `handler(req, res, body)` may answer other routes; return false to fall through to 404.
 */
export async function startStaticServer(handler) {
  const srv = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks).toString();
    const u = new URL(req.url, 'http://127.0.0.1');
    if (req.method === 'GET' && u.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(readFileSync(INDEX_HTML));
      return;
    }
    try {
      if (handler && (await handler(req, res, body, u)) !== false) return;
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(e && e.stack || e));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${srv.address().port}`;
  return { url, close: () => new Promise((r) => { srv.closeAllConnections?.(); srv.close(() => r()); }) };
}

/** Names of the payload types on the first video m-line of an SDP, in preference order. */
export function videoCodecOrder(sdp) {
  const sec = sdp.split(/\r?\nm=/).find((s) => s.startsWith('video'));
  if (!sec) return [];
  const pts = sec.split(/\r?\n/)[0].split(' ').slice(3);
  const map = {};
  for (const m of sec.matchAll(/a=rtpmap:(\d+) ([^/\r\n]+)/g)) map[m[1]] = m[2];
  return pts.map((pt) => map[pt] || pt);
}

// ---------------------------------------------------------------------------------------------
// Flashphoner Web SDK demo pages (npm @flashphoner/websdk), served unchanged from 127.0.0.1.

/** Root of the installed @flashphoner/websdk package (its demo pages live under examples/). */
export const WEBSDK_DIR = path.join(TESTS_DIR, 'node_modules/@flashphoner/websdk');
export const TWO_WAY_PATH = '/examples/demo/streaming/two_way_streaming/two_way_streaming.html';
export const EMBED_PLAYER_PATH = '/examples/demo/streaming/embed_player/player.html';

const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.png': 'image/png', '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.svg': 'image/svg+xml', '.ico': 'image/x-icon', '.mp4': 'video/mp4',
  '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.eot': 'application/vnd.ms-fontobject',
  '.swf': 'application/x-shockwave-flash', '.map': 'application/json',
};

/**
 * Serves the files of directory `root` (default: the @flashphoner/websdk package root) on
 * http://127.0.0.1:<free port>/, so the demo pages' relative references (../../../../flashphoner.js,
 * ../../dependencies/...) resolve as in the package. Every request is recorded in `requests`.
 * `serve(path, body, contentType)` adds a page of a test's own at `path` (served as a real
 * 127.0.0.1 response, so Chromium treats it as loopback like the package's files).
 * `host` binds another address instead of 127.0.0.1 (e.g. a test network namespace's own, for
 * browsers in other namespaces); `url` then names that host (127.0.0.1 for 0.0.0.0).
 */
export async function startPackageServer(root = WEBSDK_DIR, { host = '127.0.0.1' } = {}) {
  if (!existsSync(path.join(root, 'flashphoner.js'))) {
    throw new Error(`${root}/flashphoner.js missing: run npm ci in tests/browser`);
  }
  const base = path.resolve(root);
  const requests = [];
  const extra = new Map();
  const srv = createServer((req, res) => {
    const u = new URL(req.url, 'http://127.0.0.1');
    const own = extra.get(u.pathname);
    if (own && (req.method === 'GET' || req.method === 'HEAD')) {
      requests.push({ path: u.pathname, status: 200 });
      res.writeHead(200, { 'Content-Type': own.contentType, 'Content-Length': Buffer.byteLength(own.body), 'Cache-Control': 'no-store' });
      if (req.method === 'HEAD') res.end(); else res.end(own.body);
      return;
    }
    let rel;
    try { rel = decodeURIComponent(u.pathname); } catch { rel = u.pathname; }
    const file = path.resolve(base, '.' + rel);
    let status = 404;
    if ((req.method === 'GET' || req.method === 'HEAD') && (file === base || file.startsWith(base + path.sep))) {
      try {
        const st = statSync(file);
        if (st.isFile()) {
          status = 200;
          res.writeHead(200, {
            'Content-Type': MIME[path.extname(file).toLowerCase()] || 'application/octet-stream',
            'Content-Length': st.size, 'Cache-Control': 'no-store',
          });
          if (req.method === 'HEAD') res.end(); else res.end(readFileSync(file));
        }
      } catch { /* 404 below */ }
    }
    requests.push({ path: u.pathname, status });
    if (status !== 200) { res.writeHead(404, { 'Content-Type': 'text/plain' }); res.end('not found'); }
  });
  await new Promise((resolve, reject) => { srv.once('error', reject); srv.listen(0, host, resolve); });
  const urlHost = host === '0.0.0.0' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${urlHost}:${srv.address().port}`;
  const serve = (p, body, contentType = 'text/html; charset=utf-8') => { extra.set(p, { body, contentType }); return url + p; };
  return { url, requests, serve, close: () => new Promise((r) => { srv.closeAllConnections?.(); srv.close(() => r()); }) };
}

/** Chromium flags that keep every DNS lookup on the machine (the Embed Player names a public
 * TURN host): every host name resolves to nothing, except the IP literals in `hosts`. */
export function offlineChromiumArgs(hosts = ['127.0.0.1']) {
  return [
    `--host-resolver-rules=MAP * ~NOTFOUND${hosts.map((h) => ` , EXCLUDE ${h}`).join('')}`,
    '--autoplay-policy=no-user-gesture-required',
  ];
}
export const OFFLINE_CHROMIUM_ARGS = offlineChromiumArgs();

/** Records every RTCPeerConnection a page creates in window.__pcs (the SDK owns them). */
const PC_HOOK = `(() => {
  if (window.__pcs) return;
  window.__pcs = [];
  const Orig = window.RTCPeerConnection;
  if (!Orig) return;
  class Hooked extends Orig {
    constructor(...a) { super(...a); window.__pcs.push(this); }
  }
  window.RTCPeerConnection = Hooked;
  if (window.webkitRTCPeerConnection) window.webkitRTCPeerConnection = Hooked;
})();`;

/**
 * A fresh browser context whose requests stay on 127.0.0.1 (or on the hosts of `allowHosts`,
 * e.g. a test's own network namespace addresses): any http(s) request to another host is
 * aborted and listed in `context.blocked`; pages get the RTCPeerConnection hook.
 */
export async function newLoopbackContext(browser, { allowHosts = ['127.0.0.1'] } = {}) {
  const allowed = new Set(allowHosts);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.blocked = [];
  await context.route('**/*', (route) => {
    const u = new URL(route.request().url());
    if ((u.protocol === 'http:' || u.protocol === 'https:') && !allowed.has(u.hostname)) {
      context.blocked.push(u.href);
      return route.abort('blockedbyclient');
    }
    return route.continue();
  });
  await context.addInitScript(PC_HOOK);
  return context;
}

/** Shortens the SDP inside a logged signalling frame so logs stay readable. */
function shortFrame(text) {
  return String(text).replace(/v=0(\\r\\n|\r\n)[^"]*/g, (m) => `<sdp ${m.length} chars>`);
}

/**
 * Opens a page in `context`, records console output (page.consoleLines) and every WebSocket
 * frame (page.wsFrames: {dir:'>'|'<', t, text}, '>' = page to server) and close/error.
 */
export async function openLoggedPage(context, url) {
  const page = await context.newPage();
  page.consoleLines = [];
  page.wsFrames = [];
  const t0 = Date.now();
  page.wsT0 = t0; // wsFrames' t is ms after this Date.now()
  page.on('console', (m) => page.consoleLines.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => page.consoleLines.push(`[pageerror] ${e.message}`));
  page.on('websocket', (ws) => {
    page.wsFrames.push({ dir: '*', t: Date.now() - t0, text: `open ${ws.url()}` });
    ws.on('framesent', (f) => page.wsFrames.push({ dir: '>', t: Date.now() - t0, text: String(f.payload) }));
    ws.on('framereceived', (f) => page.wsFrames.push({ dir: '<', t: Date.now() - t0, text: String(f.payload) }));
    ws.on('socketerror', (e) => page.wsFrames.push({ dir: '*', t: Date.now() - t0, text: `socketerror ${e}` }));
    ws.on('close', () => page.wsFrames.push({ dir: '*', t: Date.now() - t0, text: 'close' }));
  });
  if (url) await page.goto(url);
  return page;
}

/** The frames a page exchanged, one per line, pings/pongs left out, SDP bodies shortened. */
export function frameLog(page, { keepPing = false } = {}) {
  return (page.wsFrames || [])
    .filter((f) => keepPing || !/^\{"message":"(ping|pong)"/.test(f.text))
    .map((f) => `${String(f.t).padStart(6)}ms ${f.dir} ${shortFrame(f.text)}`).join('\n');
}

/** Parsed signalling frames of a page with the given message name and direction ('<' = received). */
export function framesOf(page, message, dir = '<') {
  const out = [];
  for (const f of page.wsFrames || []) {
    if (f.dir !== dir) continue;
    try { const j = JSON.parse(f.text); if (j.message === message) out.push(j); } catch {}
  }
  return out;
}

/**
 * Video stats of the page's RTCPeerConnections collected by the hook: the inbound (or with
 * type 'outbound-rtp', outbound) video stream with the most frames, or null.
 */
export function hookedVideoStats(page, type = 'inbound-rtp') {
  return page.evaluate(async (type) => {
    let best = null;
    for (const pc of window.__pcs || []) {
      if (pc.connectionState === 'closed') continue;
      const rep = await pc.getStats();
      rep.forEach((r) => {
        if (r.type !== type || r.kind !== 'video') return;
        const n = r.framesDecoded ?? r.framesEncoded ?? 0;
        if (best && n <= best.frames) return;
        const codec = r.codecId && rep.get(r.codecId);
        best = {
          frames: n, framesDecoded: r.framesDecoded || 0, framesEncoded: r.framesEncoded || 0,
          frameWidth: r.frameWidth || 0, frameHeight: r.frameHeight || 0,
          mimeType: codec ? codec.mimeType : null, bytes: r.bytesReceived ?? r.bytesSent ?? 0,
          iceState: pc.iceConnectionState, pcs: window.__pcs.length,
        };
      });
    }
    return best;
  }, type);
}

/**
 * Inbound audio of the page's RTCPeerConnections collected by the hook, as Chromium received and
 * decoded it: the stream with the most packets, or null before any.
 */
export function hookedAudioStats(page) {
  return page.evaluate(async () => {
    let best = null;
    for (const pc of window.__pcs || []) {
      if (pc.connectionState === 'closed') continue;
      const rep = await pc.getStats();
      rep.forEach((r) => {
        if (r.type !== 'inbound-rtp' || r.kind !== 'audio') return;
        if (best && (r.packetsReceived || 0) <= best.packetsReceived) return;
        const codec = r.codecId && rep.get(r.codecId);
        best = {
          packetsReceived: r.packetsReceived || 0, packetsLost: r.packetsLost || 0,
          totalSamplesReceived: r.totalSamplesReceived || 0, concealedSamples: r.concealedSamples || 0,
          audioLevel: r.audioLevel || 0, totalAudioEnergy: r.totalAudioEnergy || 0,
          mimeType: codec ? codec.mimeType : null,
        };
      });
    }
    return best;
  });
}

/**
 * Waits until a player inside `containerSelector` (the SDK puts a <video id=mediaSessionId> there)
 * has videoWidth > 0 and the page's inbound video has decoded >= minFrames.
 */
export async function waitForSdkVideo(page, { containerSelector = '#remoteVideo', minFrames = 60, timeout = 30_000 } = {}) {
  let last = null;
  try {
    return await poll(async () => {
      const s = await hookedVideoStats(page);
      const vw = await page.evaluate((sel) => {
        const v = document.querySelector(`${sel} video`);
        return v ? v.videoWidth : -1;
      }, containerSelector);
      last = s ? { ...s, videoWidth: vw } : { videoWidth: vw };
      return s && vw > 0 && s.framesDecoded >= minFrames ? last : false;
    }, { timeout, interval: 250, what: `>= ${minFrames} frames decoded in ${containerSelector}` });
  } catch (e) {
    throw new Error(`${e.message}; last: ${JSON.stringify(last)}`);
  }
}

/** Waits until the text of `selector` equals (string) or matches (RegExp) `want`; returns it. */
export async function waitForText(page, selector, want, { timeout = 15_000 } = {}) {
  const ok = (s) => (want instanceof RegExp ? want.test(s) : s === want);
  let last;
  try {
    await poll(async () => {
      last = ((await page.textContent(selector)) || '').trim();
      return ok(last);
    }, { timeout, interval: 100, what: `${selector} text ${want instanceof RegExp ? want : JSON.stringify(want)}` });
    return last;
  } catch (e) {
    throw new Error(`${e.message} (last ${selector} text: ${JSON.stringify(last)})`);
  }
}

/** The SDK page for lbUrl (no demo passes lbUrl): served by the package server (pkg.serve), so
 * `/flashphoner.js` is the package's own bundle, as the demos load it. Statuses go to window.__ev. */
export const LB_PAGE_PATH = '/__rtcdn_test__/lb_player.html';
export const LB_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>lbUrl player</title>
<script src="/flashphoner.js"></script></head>
<body><div id="display" style="width:640px;height:360px"></div>
<script>
window.__ev = [];
window.__session = null;
window.__stream = null;
const log = (what, status, info) => window.__ev.push({ t: Date.now(), what, status, info: info || null });
window.startLbPlayer = (urlServer, lbUrl, name) => {
  Flashphoner.init({});
  const SESSION = Flashphoner.constants.SESSION_STATUS, STREAM = Flashphoner.constants.STREAM_STATUS;
  const session = window.__session = Flashphoner.createSession({ urlServer, lbUrl });
  for (const s of [SESSION.ESTABLISHED, SESSION.DISCONNECTED, SESSION.FAILED]) {
    session.on(s, () => log('session', s));
  }
  session.on(SESSION.ESTABLISHED, () => {
    const stream = window.__stream = session.createStream({ name, display: document.getElementById('display') });
    for (const s of [STREAM.PLAYING, STREAM.STOPPED, STREAM.FAILED]) {
      stream.on(s, (st) => log('stream', s, st && st.getInfo && st.getInfo()));
    }
    stream.play();
  });
};
</script></body></html>`;

/**
 * Registers the test file's `before` and `after`: offline Chromium and the SDK's package server,
 * started unless `skip` and handed to `use(browser, pkg)`, stopped after the file's tests.
 */
export function withBrowserAndPackages(use, { skip = false } = {}) {
  let browser;
  let pkg;
  before(async () => {
    if (skip) return;
    browser = await launchChromium({ args: OFFLINE_CHROMIUM_ARGS });
    pkg = await startPackageServer();
    use(browser, pkg);
  });
  after(async () => {
    await browser?.close();
    await pkg?.close();
  });
}
