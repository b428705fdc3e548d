// node --test web/test/: parsing recordings for replay.html.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAsciicast, parseNovnc, recordingKind, unescapeBytes } from '../js/replay.js';

test('asciicast: header and events', () => {
  const cast = '{"version": 2, "width": 100, "height": 30, "timestamp": 1767225600}\n' +
    '[0.5, "o", "login: "]\n[1.25, "r", "120x40"]\n[2, "o", "\\u001b[1mhé\\"✓\\""]\n';
  const { header, events } = parseAsciicast(cast);
  assert.deepEqual(header, { width: 100, height: 30, timestamp: 1767225600 });
  assert.deepEqual(events, [[0.5, 'o', 'login: '], [1.25, 'r', '120x40'], [2, 'o', '\x1b[1mhé"✓"']]);
  assert.equal(recordingKind(cast), 'asciicast');
});

test('asciicast: a missing size is 80x24; bad lines are errors', () => {
  assert.deepEqual(parseAsciicast('{"version": 2}\n').header, { width: 80, height: 24, timestamp: undefined });
  assert.throws(() => parseAsciicast('{"version": 1}\n'), /not asciicast v2/);
  assert.throws(() => parseAsciicast('{"version": 2}\n[1, "o"]\n'), /line 2/);
  assert.throws(() => parseAsciicast(''), /empty/);
});

test('noVNC: frames both ways with Python escapes, ended by EOF', () => {
  const file = "var VNC_frame_data = [\n'{0{RFB 003.008\\n',\n'}12}RFB 003.008\\n',\n" +
    "'{15{\\x00\\xff\\'\\\\\\t\\r~',\n'EOF'];\n";
  assert.equal(recordingKind(file), 'novnc');
  const frames = parseNovnc(file);
  assert.equal(frames.length, 3);
  assert.deepEqual(frames.map((f) => [f.fromClient, f.ms]), [[false, 0], [true, 12], [false, 15]]);
  assert.deepEqual([...frames[0].bytes], [...new TextEncoder().encode('RFB 003.008\n')]);
  assert.deepEqual([...frames[2].bytes], [0, 255, 39, 92, 9, 13, 126]);
  assert.throws(() => unescapeBytes('\\q'), /bad escape/);
  assert.throws(() => parseNovnc('[1, "o", "x"]'), /not a noVNC recording/);
});
