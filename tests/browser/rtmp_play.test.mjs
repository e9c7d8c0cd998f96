// End-to-end, issue 15 step 4: headless Chromium publishes over WHIP on the built-in page, and
// ffmpeg plays the stream over RTMP (`ffmpeg -i rtmp://…/live/NAME`): an H.264 stream decodes
// (at least 60 frames) with its Opus as AAC that is not silent (Chromium's fake microphone
// beeps), a VP8 stream is refused with the reason, and the publisher's stop ends the RTMP
// player.
// Needs ffmpeg (scripts/test.sh installs it); skipped without it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { startRtcdn, launchChromium, openPage, waitForState, freeTcpPort } from './harness.mjs';

const noFfmpeg = spawnSync('ffmpeg', ['-version']).status !== 0;
const skip = process.env.RTCDN_SKIP_E2E ? 'RTCDN_SKIP_E2E is set'
  : noFfmpeg ? 'ffmpeg is not installed' : false;

let browser;
before(async () => { if (!skip) browser = await launchChromium(); });
after(async () => { await browser?.close(); });

/** Runs ffmpeg reading `url` into the null muxer; resolves { code, frames, out, ms }. */
function ffmpegPlay(url, extra = [], timeoutMs = 60_000) {
  return new Promise((resolve) => {
    const started = Date.now();
    const ff = spawn('ffmpeg', ['-hide_banner', '-nostdin', '-i', url, ...extra, '-f', 'null', '-'],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let out = '';
    ff.stderr.on('data', (b) => { out += b; });
    const timer = setTimeout(() => ff.kill('SIGKILL'), timeoutMs);
    ff.on('close', (code) => {
      clearTimeout(timer);
      const counts = [...out.matchAll(/frame=\s*(\d+)/g)].map((m) => Number(m[1]));
      resolve({ code, frames: counts.length ? counts[counts.length - 1] : 0, out, ms: Date.now() - started });
    });
  });
}

async function publishFromChromium(server, stream, codec) {
  const pub = await openPage(browser, `${server.url}/?stream=${stream}&codec=${codec}&autostart=publish`);
  await waitForState(pub, 'publishState', 'publishing', { timeout: 20_000 });
  return pub;
}

test('WHIP publish (Chromium, H.264 + Opus) -> RTMP play (ffmpeg): frames and AAC audio decoded; publisher stop ends the player', { skip, timeout: 120_000 }, async (t) => {
  const rtmpPort = await freeTcpPort();
  const server = await startRtcdn({ args: ['--rtmp', `127.0.0.1:${rtmpPort}`] });
  const stream = 'whip-to-rtmp';
  const url = `rtmp://127.0.0.1:${rtmpPort}/live/${stream}`;
  let pub;
  try {
    pub = await publishFromChromium(server, stream, 'H264');
    const decoded = await ffmpegPlay(url, ['-frames:v', '90', '-af', 'volumedetect']);
    t.diagnostic(`ffmpeg: exit ${decoded.code}, ${decoded.frames} frames in ${decoded.ms} ms`);
    assert.equal(decoded.code, 0, decoded.out);
    assert.ok(decoded.frames >= 60, `${decoded.frames} frames decoded\n${decoded.out}`);
    assert.match(decoded.out, /Video: h264/);
    assert.match(decoded.out, /Audio: aac/);
    const max = decoded.out.match(/max_volume: (-?[\d.]+) dB/);
    t.diagnostic(`audio: ${max?.[0]}, ${decoded.out.match(/mean_volume: (-?[\d.]+) dB/)?.[0]}`);
    assert.ok(max && Number(max[1]) > -40, `the AAC is silent\n${decoded.out}`);

    // The publisher leaves: the RTMP player's connection ends with it, not at a timeout.
    const playing = ffmpegPlay(url);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const stopped = Date.now();
    await pub.close();
    pub = null;
    const ended = await playing;
    t.diagnostic(`after the publisher left: exit ${ended.code}, ${ended.frames} frames, ended ${Date.now() - stopped} ms later`);
    assert.ok(Date.now() - stopped < 15_000, 'the player ended with its publisher');
    assert.ok(ended.frames > 0, ended.out);
    assert.match(server.logText(), /RTMP play ended: stopped by publisher stop/);
  } catch (e) {
    e.message += `\n--- rtcdn logs ---\n${server.logText().split('\n').slice(-100).join('\n')}`;
    throw e;
  } finally {
    await pub?.close();
    await server.stop();
  }
});

test('WHIP publish (Chromium, VP8) -> RTMP play is refused: RTMP carries H.264', { skip, timeout: 60_000 }, async () => {
  const rtmpPort = await freeTcpPort();
  const server = await startRtcdn({ args: ['--rtmp', `127.0.0.1:${rtmpPort}`] });
  const stream = 'vp8-only';
  let pub;
  try {
    pub = await publishFromChromium(server, stream, 'VP8');
    const refused = await ffmpegPlay(`rtmp://127.0.0.1:${rtmpPort}/live/${stream}`, [], 20_000);
    assert.notEqual(refused.code, 0);
    assert.match(refused.out, /RTMP playback needs H\.264 video; vp8-only is VP8/);
  } catch (e) {
    e.message += `\n--- rtcdn logs ---\n${server.logText().split('\n').slice(-100).join('\n')}`;
    throw e;
  } finally {
    await pub?.close();
    await server.stop();
  }
});
