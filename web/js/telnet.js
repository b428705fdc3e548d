// The telnet protocol for a terminal in the browser (RFC 854 and the option RFCs), with no DOM:
// it turns the server's bytes into bytes for the screen, answers option negotiation, and encodes what the
// user types. The page owns the WebSocket and the terminal; node --test drives this module directly.
//
// Options the client agrees to:
//   server side (server WILL, we say DO):  ECHO (857), SUPPRESS-GO-AHEAD (858), BINARY (856)
//   our side (server DO, we say WILL):     TERMINAL-TYPE (1091), NAWS (1073), SUPPRESS-GO-AHEAD, BINARY
// Everything else is refused (DONT / WONT). We answer only when an option's state changes, so two
// peers can never loop on negotiation (RFC 854's rule, as RFC 1143 spells it out).

export const IAC = 255;
export const DONT = 254;
export const DO = 253;
export const WONT = 252;
export const WILL = 251;
export const SB = 250;
export const GA = 249;
export const NOP = 241;
export const SE = 240;

export const OPT = Object.freeze({
  BINARY: 0,
  ECHO: 1,
  SGA: 3,
  TTYPE: 24,
  NAWS: 31,
});

const TTYPE_IS = 0;
const TTYPE_SEND = 1;
const CR = 13;
const LF = 10;
const NUL = 0;

// A subnegotiation longer than this is not one we understand: it is dropped, not buffered without end.
const MAX_SUBNEGOTIATION = 1024;

const SERVER_OPTIONS = new Set([OPT.ECHO, OPT.SGA, OPT.BINARY]);
const CLIENT_OPTIONS = new Set([OPT.TTYPE, OPT.NAWS, OPT.SGA, OPT.BINARY]);

// Parser states.
const DATA = 0;
const COMMAND = 1; // after IAC
const OPTION = 2; // after IAC WILL/WONT/DO/DONT
const SUB = 3; // inside IAC SB ... (collecting)
const SUB_IAC = 4; // IAC inside a subnegotiation

export class TelnetClient {
  /**
   * @param {object} options
   * @param {(bytes: Uint8Array) => void} options.send  called with every reply the protocol needs sent
   * @param {string} [options.terminalType]  sent for TERMINAL-TYPE (default "xterm")
   * @param {number} [options.cols]
   * @param {number} [options.rows]
   */
  constructor({ send, terminalType = 'xterm', cols = 80, rows = 24 }) {
    if (typeof send !== 'function') throw new TypeError('TelnetClient needs a send(bytes) function');
    this.sendBytes = send;
    this.terminalType = terminalType;
    this.cols = cols;
    this.rows = rows;
    this.server = new Set(); // options enabled on the server's side
    this.client = new Set(); // options enabled on our side
    this.state = DATA;
    this.verb = 0;
    this.sub = [];
    this.subOverflow = false;
    this.afterCR = false;
  }

  /** True while the server has not agreed to echo: the page should echo typed characters itself. */
  get localEcho() {
    return !this.server.has(OPT.ECHO);
  }

  /** Options in force, for a status line: e.g. {server: ['ECHO','SGA'], client: ['TTYPE','NAWS']}. */
  get options() {
    const names = (set) => [...set].map((code) => optionName(code)).sort();
    return { server: names(this.server), client: names(this.client) };
  }

  /** Feeds bytes from the server; returns the bytes to show on the terminal. */
  receive(bytes) {
    const out = [];
    for (const byte of bytes) {
      switch (this.state) {
        case DATA:
          if (byte === IAC) {
            this.state = COMMAND;
          } else {
            this.dataByte(byte, out);
          }
          break;
        case COMMAND:
          if (byte === IAC) {
            this.state = DATA;
            this.dataByte(IAC, out);
          } else if (byte === WILL || byte === WONT || byte === DO || byte === DONT) {
            this.verb = byte;
            this.state = OPTION;
          } else if (byte === SB) {
            this.sub = [];
            this.subOverflow = false;
            this.state = SUB;
          } else {
            // NOP, GA, DM, BRK, IP, AO, AYT, EC, EL, or a stray SE: nothing to show.
            this.state = DATA;
          }
          break;
        case OPTION:
          this.state = DATA;
          this.negotiate(this.verb, byte);
          break;
        case SUB:
          if (byte === IAC) {
            this.state = SUB_IAC;
          } else {
            this.subByte(byte);
          }
          break;
        case SUB_IAC:
          if (byte === SE) {
            this.state = DATA;
            if (!this.subOverflow) this.subnegotiation(this.sub);
            this.sub = [];
          } else if (byte === IAC) {
            this.state = SUB;
            this.subByte(IAC);
          } else {
            // IAC followed by a command inside SB: the server broke the rule; end the SB there
            // and read the command normally.
            this.state = COMMAND;
            this.sub = [];
            this.receive([byte]).forEach((b) => out.push(b));
          }
          break;
      }
    }
    return Uint8Array.from(out);
  }

  /** Encodes bytes the user typed for the wire: IAC doubled, a bare CR sent as CR NUL (unless BINARY). */
  encode(bytes) {
    const out = [];
    const binary = this.client.has(OPT.BINARY);
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i];
      if (byte === IAC) {
        out.push(IAC, IAC);
      } else if (byte === CR && !binary) {
        out.push(CR);
        if (bytes[i + 1] !== LF) out.push(NUL);
      } else {
        out.push(byte);
      }
    }
    return Uint8Array.from(out);
  }

  /** The terminal's size changed: remember it and tell the server if NAWS is on. */
  resize(cols, rows) {
    this.cols = cols;
    this.rows = rows;
    if (this.client.has(OPT.NAWS)) this.sendWindowSize();
  }

  dataByte(byte, out) {
    // In NVT (non-binary) mode the server sends CR NUL for a bare carriage return: drop the NUL.
    if (this.afterCR && byte === NUL && !this.server.has(OPT.BINARY)) {
      this.afterCR = false;
      return;
    }
    this.afterCR = byte === CR;
    out.push(byte);
  }

  subByte(byte) {
    if (this.sub.length >= MAX_SUBNEGOTIATION) {
      this.subOverflow = true;
      return;
    }
    this.sub.push(byte);
  }

  negotiate(verb, option) {
    switch (verb) {
      case WILL:
        if (SERVER_OPTIONS.has(option)) {
          if (!this.server.has(option)) {
            this.server.add(option);
            this.command(DO, option);
          }
        } else {
          this.command(DONT, option);
        }
        break;
      case WONT:
        if (this.server.has(option)) {
          this.server.delete(option);
          this.command(DONT, option);
        }
        break;
      case DO:
        if (CLIENT_OPTIONS.has(option)) {
          if (!this.client.has(option)) {
            this.client.add(option);
            this.command(WILL, option);
            if (option === OPT.NAWS) this.sendWindowSize();
          }
        } else {
          this.command(WONT, option);
        }
        break;
      case DONT:
        if (this.client.has(option)) {
          this.client.delete(option);
          this.command(WONT, option);
        }
        break;
    }
  }

  subnegotiation(bytes) {
    if (bytes.length === 0) return;
    const [option, ...rest] = bytes;
    if (option === OPT.TTYPE && rest[0] === TTYPE_SEND && this.client.has(OPT.TTYPE)) {
      const name = Array.from(this.terminalType, (ch) => ch.charCodeAt(0) & 0x7f);
      this.subnegotiate(OPT.TTYPE, [TTYPE_IS, ...name]);
    }
    // Nothing else is asked of a client that agreed only to TTYPE and NAWS.
  }

  sendWindowSize() {
    const cols = clamp16(this.cols);
    const rows = clamp16(this.rows);
    this.subnegotiate(OPT.NAWS, [cols >> 8, cols & 0xff, rows >> 8, rows & 0xff]);
  }

  command(verb, option) {
    this.sendBytes(Uint8Array.of(IAC, verb, option));
  }

  subnegotiate(option, payload) {
    const out = [IAC, SB, option];
    for (const byte of payload) {
      out.push(byte);
      if (byte === IAC) out.push(IAC);
    }
    out.push(IAC, SE);
    this.sendBytes(Uint8Array.from(out));
  }
}

function clamp16(n) {
  return Math.max(0, Math.min(0xffff, Math.floor(n)));
}

export function optionName(code) {
  for (const [name, value] of Object.entries(OPT)) if (value === code) return name;
  return String(code);
}
