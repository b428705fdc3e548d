// Scale-out in headless Chromium: two wsproxy instances sharing their sessions through a real
// redis-server. A desktop (a real Xvnc) reserved through one instance is opened through the other,
// whose client is forwarded to the instance that launched it, paints, and is stopped through the
// first.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Cleanup, canConnect, freeDisplay, freePort, launchBrowser, openPage, runX, screenshotPath, startProcess,
  startWsproxy, tempDir, waitForStatus, waitUntil, WEB,
} from './helpers.mjs';

const ADMIN = 'cluster-test-admin-token';
const cleanup = new Cleanup();
let browser;
let a;
let b;
let display;

before(async () => {
  const dir = tempDir('cluster');
  cleanup.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const redisPort = await freePort();
  const redis = startProcess('redis', 'redis-server', [
    '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
  ]);
  cleanup.add(() => redis.stop(), 'stop redis-server');
  await redis.waitForOutput(/Ready to accept connections/, 10000);
  await waitUntil(() => canConnect(redisPort), 10000, 'redis-server to listen');
  display = freeDisplay();
  const port = await freePort();
  const services = `
[sessions]
store = "redis://127.0.0.1:${redisPort}/0?namespace=browser"
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
command = ["Xvnc", ":{display}", "-rfbport", "{port}", "-localhost", "-nolisten", "tcp", "-geometry", "640x480",
           "-depth", "24", "-desktop", "session {session}", "-AlwaysShared", "-SecurityTypes", "VncAuth",
           "-rfbauth", "{secret_file}"]
display = "${display}+{index}"
port = "${port}+{index}"
target = "rebind"
secret = "vnc-password"
page = "vnc"
`;
  const file = path.join(dir, 'services.toml');
  fs.writeFileSync(file, services);
  a = await startWsproxy(cleanup, ['--sessions', file, '--web', WEB, '127.0.0.1:0'], { name: 'cluster-a' });
  b = await startWsproxy(cleanup, ['--sessions', file, '--web', WEB, '127.0.0.1:0'], { name: 'cluster-b' });
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

async function api(origin, method, url, body) {
  const response = await fetch(`${origin}${url}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15000),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : null };
}

function pixel(page, x, y) {
  return page.evaluate(({ x, y }) => {
    const canvas = document.querySelector('#screen canvas');
    return [...canvas.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)];
  }, { x, y });
}

test('a desktop reserved through one instance opens and paints through another, and stops through the first', async () => {
  const reserved = await api(a.origin, 'POST', '/api/v1/sessions', { service: 'desktop' });
  assert.equal(reserved.status, 201, JSON.stringify(reserved.json));
  const session = reserved.json;
  // The page URL A gave, opened on B: the first connection, so B launches it.
  const onB = session.urls.page.replace(a.origin, b.origin);
  const onA = session.urls.page;
  assert.notEqual(onB, onA);
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  try {
    const first = await openPage(context, onB);
    await waitForStatus(first, 'connected', 30000);
    await b.proc.waitForOutput(/listening at/, 5000);
    assert.equal(/listening at/.test(a.proc.output()), false, 'A launched nothing');
    // A second window through A: forwarded to B, which runs the desktop.
    const second = await openPage(context, onA);
    await waitForStatus(second, 'connected', 30000);
    await runX({ env: { DISPLAY: `:${display}` } }, 'xsetroot', ['-solid', '#a53a6e']);
    for (const page of [first, second]) {
      await waitUntil(async () => {
        const [r, g, bl] = await pixel(page, 630, 470);
        return Math.abs(r - 0xa5) < 9 && Math.abs(g - 0x3a) < 9 && Math.abs(bl - 0x6e) < 9;
      }, 15000, 'the new root colour on both canvases');
    }
    await second.screenshot({ path: screenshotPath('cluster-forwarded-desktop') });
    const running = await api(a.origin, 'GET', `/api/v1/sessions/${session.id}`);
    assert.equal(running.json.state, 'running');
    assert.equal(running.json.clients, 2);
    assert.deepEqual(first.problems, []);
    assert.deepEqual(second.problems, []);

    // Stopped through A, which does not run it: both pages see the end.
    assert.equal((await api(a.origin, 'DELETE', `/api/v1/sessions/${session.id}`)).status, 204);
    await waitForStatus(first, 'disconnected', 15000);
    await waitForStatus(second, 'disconnected', 15000);
  } finally {
    await context.close();
  }
  const stopped = await api(b.origin, 'GET', `/api/v1/sessions/${session.id}`);
  assert.equal(stopped.json.state, 'stopped');
  await waitUntil(() => !fs.existsSync(`/tmp/.X11-unix/X${display}`), 10000, 'Xvnc to go');
});
