// replay.html: plays the recordings a wsproxy started with --record FILE --serve-recordings lists at
// recordings/ (JSON), with the same auth as the pages.
//   asciicast (--record-format asciicast): into an xterm.js terminal of the recorded size.
//   noVNC's format (--record-format novnc): the server's frames fed to noVNC's RFB through a channel
//     that plays them back at their times (what the client sent is only in the file, not replayed).
// Query parameters:
//   file=NAME      the recording to open (default: the newest)
//   autoplay=0     do not start playing at once
//   speed=N        playback speed (default 1)
//   max_idle=S     longest pause between two events, in seconds (default 2; 0 keeps the recorded ones)
//   instant=1      show the end state at once (the whole recording without pauses)
// window.wsproxyReplay: {state: 'idle'|'loading'|'playing'|'paused'|'done'|'failed', kind, name, terminal, rfb}
import { Terminal } from '../node_modules/@xterm/xterm/lib/xterm.mjs';
import RFB from '../node_modules/@novnc/novnc/core/rfb.js';
import { boolParam, intParam, stringParam } from './params.js';
import { bindFullscreenButton, setStatus } from './ui.js';
import { parseAsciicast, parseNovnc, recordingKind } from './replay.js';

const params = new URLSearchParams(window.location.search);
const settings = {
  file: stringParam(params, 'file', ''),
  autoplay: boolParam(params, 'autoplay', true),
  speed: Number(stringParam(params, 'speed', '1')) || 1,
  maxIdle: intParam(params, 'max_idle', 2, 0, 86400),
  instant: boolParam(params, 'instant', false),
};

const $ = (id) => document.getElementById(id);
const ui = {
  list: $('recording'),
  play: $('play'),
  pause: $('pause'),
  end: $('end'),
  speed: $('speed'),
  status: $('status'),
  screen: $('screen'),
};
const replay = { state: 'idle', kind: null, name: null, terminal: null, rfb: null };
window.wsproxyReplay = replay;
bindFullscreenButton($('fullscreen'));

/**
 * Plays timed steps: `steps` is [{at: seconds, run()}], sorted. Pauses longer than maxIdle are
 * shortened; `finish()` runs every remaining step at once.
 */
class Player {
  constructor(steps, onDone) {
    this.steps = steps;
    this.onDone = onDone;
    this.next = 0;
    this.clock = 0; // recording time reached, in seconds (pauses already shortened)
    this.timer = null;
    this.playing = false;
  }

  play(speed) {
    this.speed = speed;
    this.playing = true;
    this.wallStart = performance.now();
    this.clockStart = this.clock;
    this.tick();
  }

  pause() {
    this.playing = false;
    clearTimeout(this.timer);
  }

  finish() {
    this.pause();
    while (this.next < this.steps.length) this.steps[this.next++].run();
    this.done();
  }

  tick() {
    if (!this.playing) return;
    const now = this.clockStart + ((performance.now() - this.wallStart) / 1000) * this.speed;
    while (this.next < this.steps.length && this.steps[this.next].at <= now) {
      this.steps[this.next++].run();
    }
    this.clock = now;
    if (this.next >= this.steps.length) {
      this.playing = false;
      this.done();
      return;
    }
    const wait = ((this.steps[this.next].at - now) / this.speed) * 1000;
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.min(wait, 1000)));
  }

  done() {
    if (this.finished) return;
    this.finished = true;
    this.onDone();
  }
}

/** Times with every pause longer than maxIdle seconds cut to maxIdle (0: keep them). */
function compress(times, maxIdle) {
  let shift = 0;
  let previous = 0;
  return times.map((t) => {
    const gap = t - previous;
    previous = t;
    if (maxIdle > 0 && gap > maxIdle) shift += gap - maxIdle;
    return t - shift;
  });
}

let player = null;

function setState(state, text) {
  replay.state = state;
  const shown = { playing: 'connected', failed: 'failed', paused: 'connecting' }[state] || 'idle';
  setStatus(ui.status, shown, text);
  ui.play.hidden = state === 'playing';
  ui.pause.hidden = state !== 'playing';
  ui.play.disabled = state === 'loading' || state === 'failed';
  ui.end.disabled = state !== 'playing' && state !== 'paused';
}

function reset() {
  if (player) player.pause();
  player = null;
  if (replay.rfb) {
    replay.rfb.disconnect();
    replay.rfb = null;
  }
  if (replay.terminal) {
    replay.terminal.dispose();
    replay.terminal = null;
  }
  ui.screen.replaceChildren();
}

/** The asciicast player: output into a terminal of the recorded size; "r" events resize it. */
function asciicastSteps(text) {
  const { header, events } = parseAsciicast(text);
  const term = new Terminal({
    cols: header.width,
    rows: header.height,
    fontFamily: '"DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace',
    fontSize: 15,
    scrollback: 10000,
    disableStdin: true,
    cursorBlink: false,
  });
  term.open(ui.screen);
  replay.terminal = term;
  const times = compress(events.map((e) => e[0]), settings.maxIdle);
  const steps = [];
  events.forEach(([, kind, data], i) => {
    if (kind === 'o') {
      steps.push({ at: times[i], run: () => term.write(data) });
    } else if (kind === 'r') {
      const size = /^(\d+)x(\d+)$/.exec(data);
      if (size) steps.push({ at: times[i], run: () => term.resize(Number(size[1]), Number(size[2])) });
    }
  });
  const started = header.timestamp ? new Date(header.timestamp * 1000).toLocaleString() : 'unknown time';
  return { steps, about: `terminal ${header.width}×${header.height}, recorded ${started}` };
}

/** A WebSocket stand-in that noVNC's RFB attaches to; the recording's server frames arrive as messages. */
class PlaybackChannel {
  constructor() {
    this.binaryType = 'arraybuffer';
    this.protocol = 'binary';
    this.readyState = 'open';
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null;
  }

  send() {} // the client's answers go nowhere: the recording already holds the server's replies

  close() {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    if (this.onclose) this.onclose({ code: 1000, reason: 'end of recording', wasClean: true });
  }

  deliver(bytes) {
    if (this.readyState === 'open' && this.onmessage) this.onmessage({ data: bytes.slice().buffer });
  }
}

/** The noVNC player: the server's frames into RFB at their times (a VNC password is answered blank). */
function novncSteps(text) {
  const frames = parseNovnc(text).filter((f) => !f.fromClient);
  const channel = new PlaybackChannel();
  const rfb = new RFB(ui.screen, channel, { shared: true });
  rfb.viewOnly = true;
  rfb.scaleViewport = true;
  rfb.addEventListener('credentialsrequired', () => rfb.sendCredentials({ password: '' }));
  replay.rfb = rfb;
  const times = compress(frames.map((f) => f.ms / 1000), settings.maxIdle);
  const steps = frames.map((frame, i) => ({ at: times[i], run: () => channel.deliver(frame.bytes) }));
  return { steps, about: `desktop, ${frames.length} frames from the server` };
}

async function open(name) {
  reset();
  replay.name = name;
  replay.kind = null;
  setState('loading', `Loading ${name}…`);
  let text;
  try {
    const response = await fetch(`recordings/${encodeURIComponent(name)}`, { cache: 'no-cache' });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    text = await response.text();
  } catch (error) {
    setState('failed', `Cannot load ${name}: ${error.message}`);
    return;
  }
  let made;
  try {
    replay.kind = recordingKind(text);
    made = replay.kind === 'novnc' ? novncSteps(text) : asciicastSteps(text);
  } catch (error) {
    setState('failed', `${name} is not a recording this page can play: ${error.message}`);
    return;
  }
  player = new Player(made.steps, () => {
    // xterm.js parses writes asynchronously: done once the last one is on screen.
    const shown = () => setState('done', `${name}: end (${made.about})`);
    if (replay.terminal) replay.terminal.write('', shown);
    else shown();
  });
  setState('paused', `${name}: ${made.about}`);
  if (settings.instant) {
    player.finish();
  } else if (settings.autoplay) {
    play();
  }
}

function play() {
  if (!player) return;
  if (player.finished) {
    open(replay.name);
    return;
  }
  setState('playing', `Playing ${replay.name} at ${ui.speed.value}×`);
  player.play(Number(ui.speed.value) || 1);
}

ui.play.addEventListener('click', play);
ui.pause.addEventListener('click', () => {
  if (!player) return;
  player.pause();
  setState('paused', `Paused ${replay.name}`);
});
ui.end.addEventListener('click', () => player && player.finish());
ui.speed.addEventListener('change', () => {
  if (player && player.playing) {
    player.pause();
    play();
  }
});
ui.list.addEventListener('change', () => {
  const url = new URL(window.location.href);
  url.searchParams.set('file', ui.list.value);
  window.history.replaceState(null, '', url);
  open(ui.list.value);
});

async function start() {
  if (![...ui.speed.options].some((o) => o.value === String(settings.speed))) {
    ui.speed.add(new Option(`${settings.speed}×`, String(settings.speed)));
  }
  ui.speed.value = String(settings.speed);
  setState('loading', 'Loading the list of recordings…');
  let list;
  try {
    const response = await fetch('recordings/', { cache: 'no-cache' });
    if (response.status === 404) {
      setState('failed', 'This server lists no recordings: start wsproxy with --record FILE --serve-recordings --web DIR');
      return;
    }
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    list = (await response.json()).recordings;
  } catch (error) {
    setState('failed', `Cannot list the recordings: ${error.message}`);
    return;
  }
  for (const item of list) {
    const when = new Date(item.modified * 1000).toLocaleString();
    ui.list.add(new Option(`${item.name} (${item.format}, ${item.size} B, ${when})`, item.name));
  }
  const name = settings.file || (list[0] && list[0].name);
  if (!name) {
    setState('idle', 'No recordings yet');
    return;
  }
  if (![...ui.list.options].some((o) => o.value === name)) ui.list.add(new Option(name, name));
  ui.list.value = name;
  open(name);
}

start();
