// Parsing the two kinds of wsproxy recordings (pure functions, unit-tested in web/test/replay.test.mjs).
//   asciicast v2 (--record-format asciicast): a JSON header line, then [time, kind, text] lines.
//   noVNC's playback format (--record-format novnc, websockify's --record): a JavaScript file
//     `var VNC_frame_data = [ '{<ms>{<data>', '}<ms>}<data>', ..., 'EOF'];` whose data is escaped
//     like Python's unicode_escape over latin-1. Parsed as text, never evaluated.

/** Parses an asciicast v2 recording: {header, events: [[seconds, kind, text], ...]}. Throws on bad input. */
export function parseAsciicast(text) {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  if (lines.length === 0) throw new Error('empty recording');
  const header = JSON.parse(lines[0]);
  if (header.version !== 2) throw new Error(`not asciicast v2 (version ${header.version})`);
  const events = [];
  for (let i = 1; i < lines.length; i++) {
    const event = JSON.parse(lines[i]);
    if (!Array.isArray(event) || typeof event[0] !== 'number' || typeof event[1] !== 'string' ||
      typeof event[2] !== 'string') {
      throw new Error(`line ${i + 1} is not an asciicast event`);
    }
    events.push(event);
  }
  return {
    header: {
      width: Number.isInteger(header.width) && header.width > 0 ? header.width : 80,
      height: Number.isInteger(header.height) && header.height > 0 ? header.height : 24,
      timestamp: header.timestamp,
    },
    events,
  };
}

/** Undoes Python's unicode_escape (over latin-1) and the \' of noVNC's format: one byte per character. */
export function unescapeBytes(escaped) {
  const out = [];
  for (let i = 0; i < escaped.length; i++) {
    const c = escaped[i];
    if (c !== '\\') {
      out.push(escaped.charCodeAt(i) & 0xff);
      continue;
    }
    const next = escaped[++i];
    switch (next) {
      case 'n': out.push(10); break;
      case 'r': out.push(13); break;
      case 't': out.push(9); break;
      case '\\': out.push(92); break;
      case "'": out.push(39); break;
      case 'x': {
        const hex = escaped.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new Error(`bad escape \\x${hex}`);
        out.push(parseInt(hex, 16));
        i += 2;
        break;
      }
      default:
        throw new Error(`bad escape \\${next}`);
    }
  }
  return Uint8Array.from(out);
}

/**
 * Parses noVNC's playback format: [{ms, fromClient, bytes}, ...] in file order, ending at 'EOF'
 * (a recording still being written has no EOF yet; its frames are returned all the same).
 */
export function parseNovnc(text) {
  if (!/^\s*var VNC_frame_data = \[/.test(text)) throw new Error('not a noVNC recording (no VNC_frame_data)');
  const frames = [];
  for (const line of text.split('\n')) {
    const match = /^'([{}])(\d+)\1(.*)',?$/.exec(line);
    if (!match) continue;
    frames.push({ fromClient: match[1] === '}', ms: Number(match[2]), bytes: unescapeBytes(match[3]) });
  }
  return frames;
}

/** Which kind a recording's text is: 'asciicast' or 'novnc' (by content, whatever its name). */
export function recordingKind(text) {
  return /^\s*var VNC_frame_data/.test(text) ? 'novnc' : 'asciicast';
}
