// Child processes of the namespace tests: each in its own process group, its output kept as
// lines, killed with its group when the test runner exits. Shared by interop.test.mjs,
// turn.test.mjs and relay_tcp.test.mjs.
import { spawn } from 'node:child_process';

const children = new Set();

/** Signals a child's whole process group (or the child alone if it has none). */
export function killGroup(child, sig) {
  try { process.kill(-child.pid, sig); } catch { try { child.kill(sig); } catch {} }
}

/** Kills every child still running (test teardown). */
export function killAll() {
  for (const c of children) killGroup(c, 'SIGKILL');
}

process.on('exit', killAll);

/** Spawns a process in its own process group, keeping the last `keep` lines of its output. */
export function startProc(name, cmd, args, { env = {}, keep = 3000 } = {}) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.add(child);
  const lines = [];
  // Whole lines only: a chunk may end in the middle of one (stdout and stderr kept apart).
  const keeper = () => {
    let partial = '';
    const push = (l) => { if (l) lines.push(l); if (lines.length > keep) lines.splice(0, lines.length - keep); };
    return {
      data: (buf) => {
        const parts = (partial + buf.toString()).split('\n');
        partial = parts.pop();
        parts.forEach(push);
      },
      flush: () => { push(partial); partial = ''; },
    };
  };
  const out = keeper(), err = keeper();
  child.stdout.on('data', out.data);
  child.stderr.on('data', err.data);
  child.stdout.on('end', out.flush);
  child.stderr.on('end', err.flush);
  let exited = null;
  const exitP = new Promise((r) => child.on('exit', (code, signal) => { exited = { code, signal }; children.delete(child); r(exited); }));
  child.on('error', (e) => lines.push(`spawn error: ${e.message}`));
  return {
    name, child, lines, exitP,
    get exited() { return exited; },
    text: (n = 200) => lines.slice(-n).join('\n'),
    /** SIGTERM to the process group, SIGKILL after `grace` ms. */
    async stop(grace = 5000) {
      if (exited) return exited;
      killGroup(child, 'SIGTERM');
      const t = setTimeout(() => killGroup(child, 'SIGKILL'), grace);
      const r = await exitP;
      clearTimeout(t);
      killGroup(child, 'SIGKILL'); // leftovers of the group, if any
      return r;
    },
  };
}
