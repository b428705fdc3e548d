// On-demand sessions in headless Chromium: a desktop (a real Xvnc with a generated VNC password)
// reserved through wsproxy's REST API, opened with the page URL the API returns (the password in
// the fragment), shared by two windows, stopped when the pages close, and its index reused.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Cleanup, freeDisplay, freePort, launchBrowser, openPage, runX, screenshotPath, startWsproxy, tempDir,
  waitForStatus, waitForTerminal, waitUntil, WEB,
} from './helpers.mjs';

const ADMIN = 'browser-test-admin-token';
const cleanup = new Cleanup();
let browser;
let proxy;
let display;
let jobDisplay;

before(async () => {
  const dir = tempDir('sessions');
  cleanup.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  display = freeDisplay();
  const port = await freePort();
  // A batch job's start script, as a job scheduler's remote-desktop hook runs it: it starts Xvnc on a
  // port of its own and announces where it listens in the scheduler's format.
  jobDisplay = display + 10;
  const jobPort = await freePort();
  const job = path.join(dir, 'start-job-desktop');
  fs.writeFileSync(job, `#!/bin/sh
Xvnc :${jobDisplay} -rfbport ${jobPort} -localhost -nolisten tcp -geometry 640x400 -depth 24 -desktop "job $1" -SecurityTypes None &
for i in $(seq 100); do [ -S /tmp/.X11-unix/X${jobDisplay} ] && break; sleep 0.1; done
echo "PA_REMOTE_CONNECTION;job-$1;vnc;127.0.0.1:${jobPort}"
wait
`, { mode: 0o755 });
  const services = `
[sessions]
reserve_timeout = 60
start_timeout = 20
linger = 0
stop_grace = 3

[[api.token]]
token = "${ADMIN}"
scopes = ["admin"]
user = "tester"

[[service]]
name = "desktop"
count = 1
command = ["Xvnc", ":{display}", "-rfbport", "{port}", "-localhost", "-nolisten", "tcp", "-geometry", "{opt.geometry}",
           "-depth", "24", "-desktop", "session {session}", "-AlwaysShared", "-SecurityTypes", "VncAuth",
           "-rfbauth", "{secret_file}"]
display = "${display}+{index}"
port = "${port}+{index}"
target = "rebind"
secret = "vnc-password"
page = "vnc"
[service.options.geometry]
default = "800x600"
pattern = '^\\d{3,4}x\\d{3,4}$'

[[service]]
name = "job"
count = 1
command = ["${job}", "{session}"]
target = { announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\\d+)' }
page = "vnc"

[[service]]
name = "qemu"
count = 1
command = ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
           "-chardev", "socket,id=mon,path={runtime_dir}/monitor.sock,server=on,wait=off",
           "-mon", "chardev=mon,mode=readline"]
target = "unix:{runtime_dir}/monitor.sock"
page = "serial"
`;
  const file = path.join(dir, 'services.toml');
  fs.writeFileSync(file, services);
  proxy = await startWsproxy(cleanup, ['--sessions', file, '--web', WEB, '127.0.0.1:0'], { name: 'sessions' });
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

async function api(method, url, body) {
  const response = await fetch(`${proxy.origin}${url}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10000),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : null };
}

async function untilState(id, state) {
  let last;
  await waitUntil(async () => {
    last = (await api('GET', `/api/v1/sessions/${id}`)).json;
    return last.state === state;
  }, 20000, `session ${id} to be ${state}`);
  return last;
}

/** The colour of the canvas's pixel (x, y). */
function pixel(page, x, y) {
  return page.evaluate(({ x, y }) => {
    const canvas = document.querySelector('#screen canvas');
    return [...canvas.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)];
  }, { x, y });
}

/** The noVNC canvas's size, or null before the first frame. */
function canvasSize(page) {
  return page.evaluate(() => {
    const canvas = document.querySelector('#screen canvas');
    return canvas && canvas.width > 0 ? { width: canvas.width, height: canvas.height } : null;
  });
}

test('a desktop reserved through the API opens from its page URL, two windows share it, closing them stops it', async () => {
  const reserved = await api('POST', '/api/v1/sessions', { service: 'desktop', options: { geometry: '640x480' } });
  assert.equal(reserved.status, 201, JSON.stringify(reserved.json));
  const session = reserved.json;
  assert.equal(session.index, 0);
  assert.match(session.urls.page, /^http:\/\/127\.0\.0\.1:\d+\/vnc\.html\?autoconnect=1&path=websockify%3Ftoken%3D\w+#password=\w{8}$/);

  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  try {
    const first = await openPage(context, session.urls.page);
    await waitForStatus(first, 'connected', 30000);
    // The password came from the fragment (VncAuth, no prompt) and left the address bar.
    assert.equal(first.url().includes('#'), false, first.url());
    await waitUntil(async () => (await canvasSize(first))?.width === 640, 15000, 'the 640x480 desktop');
    assert.deepEqual(await canvasSize(first), { width: 640, height: 480 });
    assert.equal(await first.textContent('#desktop-name'), `session ${session.id}`);
    // Painting on the session's display shows up in the page.
    await runX({ env: { DISPLAY: `:${display}` } }, 'xsetroot', ['-solid', '#3a6ea5']);
    await waitUntil(async () => {
      const [r, g, b] = await pixel(first, 630, 470);
      return Math.abs(r - 0x3a) < 9 && Math.abs(g - 0x6e) < 9 && Math.abs(b - 0xa5) < 9;
    }, 15000, 'the new root colour on the canvas');
    await first.screenshot({ path: screenshotPath('session-desktop') });

    const second = await openPage(context, session.urls.page);
    await waitForStatus(second, 'connected', 30000);
    const running = await untilState(session.id, 'running');
    assert.equal(running.clients, 2);
    assert.equal(proxy.proc.output().match(/: started \["Xvnc"/g).length, 1, 'one Xvnc for two windows');
    assert.deepEqual(first.problems, []);
    assert.deepEqual(second.problems, []);
    await first.close();
    await second.close();
  } finally {
    await context.close();
  }
  const stopped = await untilState(session.id, 'stopped');
  assert.equal(stopped.reason, 'the last client left');
  await waitUntil(() => !fs.existsSync(`/tmp/.X11-unix/X${display}`), 10000, 'Xvnc to go');

  // The index is free: the next reservation gets it, and its own password.
  const again = await api('POST', '/api/v1/sessions', { service: 'desktop' });
  assert.equal(again.status, 201);
  assert.equal(again.json.index, 0);
  assert.notEqual(again.json.secret, session.secret);
  const context2 = await browser.newContext({ viewport: { width: 900, height: 700 } });
  try {
    const page = await openPage(context2, again.json.urls.page);
    await waitForStatus(page, 'connected', 30000);
    await waitUntil(async () => (await canvasSize(page))?.width === 800, 15000, 'the default 800x600 desktop');
  } finally {
    await context2.close();
  }
  assert.equal((await api('DELETE', `/api/v1/sessions/${again.json.id}`)).status, 204);
});

test('a batch job announces its Xvnc and a QEMU monitor opens in the serial page', async () => {
  const job = await api('POST', '/api/v1/sessions', { service: 'job' });
  assert.equal(job.status, 201);
  const qemu = await api('POST', '/api/v1/sessions', { service: 'qemu' });
  assert.equal(qemu.status, 201);
  assert.match(qemu.json.urls.page, /\/serial\.html\?autoconnect=1&path=websockify%3Ftoken%3D\w+$/);
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  try {
    const desktop = await openPage(context, job.json.urls.page);
    await waitForStatus(desktop, 'connected', 30000);
    assert.equal(await desktop.textContent('#desktop-name'), `job ${job.json.id}`);
    await waitUntil(async () => (await canvasSize(desktop))?.width === 640, 15000, 'the job desktop');

    const monitor = await openPage(context, qemu.json.urls.page);
    await waitForStatus(monitor, 'connected', 30000);
    await monitor.click('#terminal');
    await monitor.keyboard.type('info version');
    await monitor.keyboard.press('Enter');
    await waitForTerminal(monitor, /^\d+\.\d+\.\d+.*$/m, 15000);
    await monitor.screenshot({ path: screenshotPath('session-qemu-monitor') });
    assert.deepEqual(desktop.problems, []);
    assert.deepEqual(monitor.problems, []);
  } finally {
    await context.close();
  }
  await untilState(job.json.id, 'stopped');
  await untilState(qemu.json.id, 'stopped');
  await waitUntil(() => !fs.existsSync(`/tmp/.X11-unix/X${jobDisplay}`), 10000, 'the job Xvnc to go');
});
