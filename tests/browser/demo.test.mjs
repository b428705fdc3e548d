// scripts/demo (what `make demo` runs), on free ports: every printed URL works in Chromium (the sessions
// page reserves a desktop and a terminal that start when their pages connect), and stopping the script
// stops everything it started.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  canConnect,
  Cleanup, freePort, launchBrowser, openPage, ROOT, screenshotPath, startProcess, tempDir, waitForStatus,
  waitForTerminal, waitUntil, withTimeout,
} from './helpers.mjs';

const cleanup = new Cleanup();
let browser;

before(async () => {
  browser = await launchBrowser(cleanup);
});

after(() => cleanup.run());

test('scripts/demo serves the desktop and the telnet terminal, and stops cleanly', async () => {
  const logs = tempDir('demo');
  cleanup.add(() => fs.rmSync(logs, { recursive: true, force: true }));
  const vncPort = await freePort();
  const telnetPort = await freePort();
  const sessionsPort = await freePort();
  const demo = startProcess('demo', path.join(ROOT, 'scripts/demo'), [], {
    env: {
      DEMO_VNC_PORT: String(vncPort),
      DEMO_TELNET_PORT: String(telnetPort),
      DEMO_SESSIONS_PORT: String(sessionsPort),
      DEMO_LOGS: logs,
    },
  });
  cleanup.add(() => demo.stop(), 'stop the demo');
  await demo.waitForOutput(/Press Ctrl\+C to stop/, 60000);
  const output = demo.output();
  const desktopUrl = output.match(/desktop: +(\S+)/)[1];
  const telnetUrl = output.match(/terminal: +(\S+)/)[1];
  assert.equal(desktopUrl, `http://127.0.0.1:${vncPort}/vnc.html?autoconnect=1&resize=scale`);
  assert.equal(telnetUrl, `http://127.0.0.1:${telnetPort}/telnet.html?autoconnect=1`);
  const sessionsUrl = output.match(/sessions: +(\S+)/)[1];
  assert.match(sessionsUrl, new RegExp(`^http://127\\.0\\.0\\.1:${sessionsPort}/sessions\\.html#token=\\w+$`));
  const display = Number(fs.readFileSync(path.join(logs, 'wsproxy-vnc.log'), 'utf8').match(/"Xvnc", ":(\d+)"/)[1]);

  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  try {
    const desktop = await openPage(context, desktopUrl);
    await waitForStatus(desktop, 'connected');
    // The demo's desktop: 1024x640 with the xterm's welcome text drawn (many colours, not a blank root).
    await waitUntil(
      () =>
        desktop.evaluate(() => {
          const canvas = document.querySelector('#screen canvas');
          if (!canvas || canvas.width !== 1024 || canvas.height !== 640) return false;
          const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
          const colours = new Set();
          for (let i = 0; i < data.length; i += 4 * 97) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
          return colours.size >= 8;
        }),
      15000,
      'the demo desktop with its windows',
    );
    await desktop.waitForTimeout(500);
    await desktop.screenshot({ path: screenshotPath('demo-desktop') });

    const terminal = await openPage(context, telnetUrl);
    await waitForStatus(terminal, 'connected');
    await waitForTerminal(terminal, /login: *$/m, 15000);
    await terminal.screenshot({ path: screenshotPath('demo-telnet') });
    assert.deepEqual(desktop.problems, []);
    assert.deepEqual(terminal.problems, []);

    // The sessions page: reserving opens the console's page, which starts it.
    const sessions = await openPage(context, sessionsUrl);
    await sessions.waitForSelector('button[data-service="terminal"]:not([disabled])', { timeout: 10000 });
    assert.equal(sessions.url().includes('#'), false, 'the API token left the address bar');
    const [onDemandTerminal] = await Promise.all([
      context.waitForEvent('page', { timeout: 10000 }),
      sessions.click('button[data-service="terminal"]'),
    ]);
    await onDemandTerminal.waitForURL(/\/telnet\.html\?/, { timeout: 20000 });
    await waitForStatus(onDemandTerminal, 'connected', 20000);
    await waitForTerminal(onDemandTerminal, /login: *$/m, 20000);
    const [onDemandDesktop] = await Promise.all([
      context.waitForEvent('page', { timeout: 10000 }),
      sessions.click('button[data-service="desktop"]'),
    ]);
    await onDemandDesktop.waitForURL(/\/vnc\.html\?/, { timeout: 20000 });
    await waitForStatus(onDemandDesktop, 'connected', 30000);
    await onDemandDesktop.waitForTimeout(1500);
    await onDemandDesktop.screenshot({ path: screenshotPath('demo-session-desktop') });
    await waitUntil(
      () => sessions.evaluate(() => document.querySelectorAll('#sessions [data-state="running"]').length === 2),
      10000,
      'two running sessions on the sessions page',
    );
    await sessions.screenshot({ path: screenshotPath('demo-sessions') });
  } finally {
    await context.close();
  }

  // SIGTERM to the script alone (as Ctrl+C reaches only it: everything it starts has its own session).
  process.kill(demo.child.pid, 'SIGTERM');
  const exit = await withTimeout(demo.exited, 15000, 'the demo to exit');
  assert.equal(exit.code, 130);
  assert.equal(await canConnect(vncPort), false);
  assert.equal(await canConnect(telnetPort), false);
  assert.equal(await canConnect(sessionsPort), false);
  await waitUntil(() => !fs.existsSync(`/tmp/.X11-unix/X${display}`), 5000, `Xvnc :${display} to go`);
});
