// scripts/launch (like noVNC's novnc_proxy) in front of a real Xvnc: it prints a URL that works in
// Chromium, and stops its wsproxy when it is stopped.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  canConnect,
  Cleanup, freeDisplay, freePort, launchBrowser, openPage, ROOT, startProcess, waitForStatus, waitUntil,
  withTimeout,
} from './helpers.mjs';

const LAUNCH = path.join(ROOT, 'scripts/launch');
const cleanup = new Cleanup();
let browser;
let rfbPort;

before(async () => {
  // Xvnc on its own (no wrap mode): launch relays to HOST:PORT like novnc_proxy --vnc.
  const display = freeDisplay();
  rfbPort = await freePort();
  const xvnc = startProcess('xvnc-direct', 'Xvnc', [
    `:${display}`, '-rfbport', String(rfbPort), '-localhost', '-nolisten', 'tcp', '-geometry', '640x400',
    '-depth', '24', '-SecurityTypes', 'None',
  ]);
  cleanup.add(() => xvnc.stop(), 'stop Xvnc');
  await waitUntil(() => fs.existsSync(`/tmp/.X11-unix/X${display}`), 10000, `X socket of :${display}`);
  await xvnc.waitForOutput(/Listening for VNC connections/, 10000);
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

test('scripts/launch prints a URL that connects, and stops wsproxy when stopped', async () => {
  const launch = startProcess('launch', LAUNCH, ['--vnc', `127.0.0.1:${rfbPort}`, '--listen', '127.0.0.1:0']);
  cleanup.add(() => launch.stop(), 'stop launch');
  const [, url, port] = await launch.waitForOutput(
    /Navigate to this URL:\s+(http:\/\/127\.0\.0\.1:(\d+)\/vnc\.html\?host=127\.0\.0\.1&port=\2)\s/,
    15000,
  );
  const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
  try {
    const page = await openPage(context, url);
    await waitForStatus(page, 'idle');
    await page.click('#connect');
    await waitForStatus(page, 'connected');
    await waitUntil(() => page.evaluate(() => document.querySelector('#screen canvas')?.width === 640), 10000,
      'the 640 px desktop');
    assert.deepEqual(page.problems, []);
  } finally {
    await context.close();
  }

  // SIGTERM to the script alone (not its group): its trap must stop wsproxy.
  assert.equal(await canConnect(Number(port)), true);
  process.kill(launch.child.pid, 'SIGTERM');
  await withTimeout(launch.exited, 10000, 'launch to exit');
  await waitUntil(async () => !(await canConnect(Number(port))), 5000, 'the wsproxy port to close');
});

test('scripts/launch refuses bad arguments with its usage', () => {
  for (const args of [['--vnc', 'nohostport'], ['--bogus'], ['--listen', 'x:y']]) {
    const run = spawnSync(LAUNCH, args, { encoding: 'utf8', timeout: 10000 });
    assert.equal(run.status, 2, `${args}: ${run.stderr}`);
    assert.match(run.stderr, /launch: |usage: launch/);
  }
  const help = spawnSync(LAUNCH, ['--help'], { encoding: 'utf8', timeout: 10000 });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: launch --vnc HOST:PORT/);
});
