// Shared by the browser tests: start the real target/release/wsproxy, Xvnc, X programs and headless
// Chromium, and stop every one of them afterwards, whether the tests passed or not.
// Everything listens on loopback only, and every wait has a time limit.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const WSPROXY = process.env.WSPROXY || path.join(ROOT, 'target/release/wsproxy');
export const WEB = path.join(ROOT, 'web');
// Runs the installed telnetd (netkit's or inetutils') for one connection on a port: `TELNETD_ONCE PORT`.
export const TELNETD_ONCE = path.join(ROOT, 'scripts/telnetd-once');
export const OUTPUT = path.join(ROOT, 'test-output/browser');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

fs.mkdirSync(path.join(OUTPUT, 'logs'), { recursive: true });

// ---------------------------------------------------------------------------------------------
// Processes: each runs in its own process group, so stopping it stops whatever it started too.

const running = new Set();

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

// Last resort if the test process itself goes away without running its cleanup.
process.on('exit', () => {
  for (const proc of running) killGroup(proc.child, 'SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const proc of running) killGroup(proc.child, 'SIGTERM');
    process.exit(130);
  });
}

const MAX_LOG = 1 << 20;

/**
 * Starts a command in its own process group with its output collected.
 * Returns {child, name, output(), waitForOutput(regex, ms), exited, stop()}.
 */
export function startProcess(name, command, args, { env = {}, cwd = ROOT } = {}) {
  const child = spawn(command, args, {
    cwd,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const waiters = new Set();
  const collect = (chunk) => {
    if (log.length < MAX_LOG) log += chunk.toString('utf8');
    for (const waiter of waiters) waiter();
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      running.delete(proc);
      for (const waiter of waiters) waiter();
      resolve(exitInfo);
    });
    child.on('error', (error) => {
      log += `\n[spawn error: ${error.message}]\n`;
      exitInfo = { code: null, signal: null, error };
      running.delete(proc);
      for (const waiter of waiters) waiter();
      resolve(exitInfo);
    });
  });

  const proc = {
    name,
    child,
    exited,
    output: () => log,
    get exitInfo() {
      return exitInfo;
    },
    /** Resolves with the match once the output matches; rejects on timeout or exit. */
    waitForOutput(regex, ms = 10000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = log.match(regex);
          if (match) {
            done();
            resolve(match);
          } else if (exitInfo) {
            done();
            reject(new Error(`${name} exited (${JSON.stringify(exitInfo)}) before printing ${regex}:\n${log}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${name}: no ${regex} within ${ms} ms; output:\n${log}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    /** SIGTERM to the group, SIGKILL after `graceMs`; saves the output under test-output/browser/logs. */
    async stop(graceMs = 5000) {
      if (!exitInfo) {
        killGroup(child, 'SIGTERM');
        const timeout = sleep(graceMs, 'timeout', { ref: false });
        if ((await Promise.race([exited, timeout])) === 'timeout') {
          killGroup(child, 'SIGKILL');
          await Promise.race([exited, sleep(2000, null, { ref: false })]);
        }
      }
      // Children that left the group (none should) are not ours to chase; the group is gone.
      killGroup(child, 'SIGKILL');
      fs.writeFileSync(path.join(OUTPUT, 'logs', `${name}.log`), log);
    },
  };
  running.add(proc);
  return proc;
}

/** Cleanup steps run in reverse order; each step is bounded and a failing step does not skip the rest. */
export class Cleanup {
  constructor() {
    this.steps = [];
  }

  add(step, label = '') {
    step.label = label;
    this.steps.push(step);
    return step;
  }

  async run() {
    const errors = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      const started = Date.now();
      try {
        await withTimeout(Promise.resolve().then(step), 15000, 'cleanup step');
      } catch (error) {
        errors.push(error);
      }
      if (Date.now() - started > 2000) {
        console.error(`# slow cleanup step (${Date.now() - started} ms): ${step.label || step.toString().slice(0, 80)}`);
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `check` (sync or async, truthy = done) every `interval` ms for at most `ms`. */
export async function waitUntil(check, ms, what, interval = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(interval);
  }
}

// ---------------------------------------------------------------------------------------------
// Ports, displays, temporary files.

/** A loopback port that was free a moment ago (bind 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** An X display number with no lock file or socket, from a random place in 20..99. */
/** Whether a TCP connection to 127.0.0.1:port is accepted (false when refused or after 2 s). */
export function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
    socket.setTimeout(2000, () => {
      socket.destroy();
      resolve(false);
    });
  });
}

export function freeDisplay() {
  const start = 20 + Math.floor(Math.random() * 80);
  for (let i = 0; i < 80; i++) {
    const n = 20 + ((start - 20 + i) % 80);
    if (!fs.existsSync(`/tmp/.X${n}-lock`) && !fs.existsSync(`/tmp/.X11-unix/X${n}`)) return n;
  }
  throw new Error('no free X display number in 20..99');
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `wsproxy-browser-${prefix}-`));
}

// ---------------------------------------------------------------------------------------------
// wsproxy, Xvnc, telnetd.

// Log files are named after the test file and the process: test-output/browser/logs/vnc-xvnc-1.log.
const testFile = path.basename(process.argv[1] || 'run', '.test.mjs').replace(/\.m?js$/, '');
let nameCounter = 0;
const unique = (name) => `${testFile}-${name}-${++nameCounter}`;

/**
 * Starts target/release/wsproxy with `args` and waits for "listening on ADDR"; returns
 * {proc, port, origin}. Stopped by `cleanup`.
 */
export async function startWsproxy(cleanup, args, { name = 'wsproxy' } = {}) {
  const proc = startProcess(unique(name), WSPROXY, args);
  cleanup.add(() => proc.stop(), `stop ${proc.name}`);
  const [, host, port] = await proc.waitForOutput(/listening on (\S+?):(\d+),/, 10000);
  const origin = `http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
  return { proc, port: Number(port), origin };
}

/**
 * A real Xvnc behind wsproxy in wrap mode: `wsproxy --wrap-mode=exit --web web PORT -- Xvnc :N ...`.
 * `password` switches the server to VncAuth. Returns {display, port, origin, proc, env}.
 */
export async function startXvnc(cleanup, { geometry = '800x600', password = null, name = 'xvnc' } = {}) {
  let lastError;
  for (let attempt = 0; attempt < 3; attempt++) {
    const display = freeDisplay();
    const port = await freePort();
    const security = ['-SecurityTypes', 'None'];
    if (password) {
      const dir = tempDir('vncauth');
      cleanup.add(() => fs.rmSync(dir, { recursive: true, force: true }));
      const file = path.join(dir, 'passwd');
      const made = spawnSync('vncpasswd', ['-f'], { input: `${password}\n`, timeout: 5000 });
      if (made.status !== 0) throw new Error(`vncpasswd -f failed: ${made.stderr}`);
      fs.writeFileSync(file, made.stdout, { mode: 0o600 });
      security.splice(0, 2, '-SecurityTypes', 'VncAuth', '-rfbauth', file);
    }
    const args = [
      '--wrap-mode=exit', '--web', WEB, `127.0.0.1:${port}`, '--',
      'Xvnc', `:${display}`, '-rfbport', String(port), '-localhost', '-nolisten', 'tcp',
      '-geometry', geometry, '-depth', '24', '-desktop', `wsproxy test :${display}`,
      '-AlwaysShared', ...security,
    ];
    const steps = new Cleanup();
    try {
      const { proc, origin } = await startWsproxy(steps, args, { name });
      await proc.waitForOutput(/the wrapped command bound port/, 10000);
      await waitUntil(() => fs.existsSync(`/tmp/.X11-unix/X${display}`), 10000, `X socket of :${display}`);
      cleanup.add(() => steps.run());
      return { display, port, origin, proc, env: { DISPLAY: `:${display}` } };
    } catch (error) {
      lastError = error;
      await steps.run().catch(() => {});
    }
  }
  throw lastError;
}

/** Runs an X program on the test display; it is stopped by `cleanup` (and dies with the server anyway). */
export function startX(cleanup, xvnc, name, command, args) {
  const proc = startProcess(unique(name), command, args, { env: xvnc.env });
  cleanup.add(() => proc.stop(2000));
  return proc;
}

/** Runs an X program that exits by itself (xsetroot) and waits for it. */
export async function runX(xvnc, command, args) {
  const proc = startProcess(unique(command), command, args, { env: xvnc.env });
  const info = await withTimeout(proc.exited, 10000, command);
  if (info.code !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${proc.output()}`);
}

// ---------------------------------------------------------------------------------------------
// Chromium.

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--no-first-run',
  '--disable-quic',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Headless Chromium with a fresh profile (playwright's launch makes a new temporary one). */
export async function launchBrowser(cleanup) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30000,
  });
  cleanup.add(() => withTimeout(browser.close(), 10000, 'closing chromium'));
  return browser;
}

/**
 * Opens `url` in a new page of `context` and records script errors, failed requests and console errors
 * in `page.problems` (a test asserts it stays empty).
 */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') page.problems.push(`console error: ${message.text()}`);
  });
  page.on('requestfailed', (request) => {
    const failure = request.failure();
    // A WebSocket the test closed on purpose is not a failed page resource.
    if (!request.url().startsWith('ws')) page.problems.push(`request failed: ${request.url()} ${failure && failure.errorText}`);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) page.problems.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  return page;
}

/** Waits for the console page's status line to reach `state`; returns its text. */
export async function waitForStatus(page, state, ms = 15000) {
  try {
    await page.waitForFunction(
      (wanted) => document.getElementById('status')?.dataset.state === wanted,
      state,
      { timeout: ms, polling: 50 },
    );
  } catch (error) {
    const now = await page.evaluate(() => {
      const status = document.getElementById('status');
      return status ? `${status.dataset.state}: ${status.textContent}` : 'no #status';
    });
    throw new Error(`status did not become ${state} within ${ms} ms (it is ${now})`);
  }
  return page.textContent('#status');
}

/** The text xterm.js's DOM renderer shows, one line per row, trailing spaces trimmed. */
export function terminalText(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.xterm-rows > div')].map((row) => row.textContent.replace(/\s+$/, '')).join('\n'),
  );
}

/** Waits until the terminal shows text matching `regex`; returns the whole screen text. */
export async function waitForTerminal(page, regex, ms = 10000) {
  let text = '';
  try {
    await waitUntil(async () => regex.test((text = await terminalText(page))), ms, `${regex} on the terminal`, 50);
  } catch (error) {
    throw new Error(`${error.message}; the terminal shows:\n${text}`);
  }
  return text;
}

export function screenshotPath(name) {
  return path.join(OUTPUT, `${name}.png`);
}
