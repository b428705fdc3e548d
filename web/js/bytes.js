// Byte helpers for the terminal pages, with no DOM (node --test checks them).

const encoder = new TextEncoder();

/** What the user typed (xterm.js onData: a JS string) as UTF-8 bytes. */
export function utf8Bytes(text) {
  return encoder.encode(text);
}

/** xterm.js onBinary strings carry one byte per character (e.g. mouse reports). */
export function binaryStringBytes(text) {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  return bytes;
}

/** Enter from xterm.js is CR; a serial line may want CR, LF or CR LF. */
export function translateEnter(text, eol) {
  if (eol === 'lf') return text.replace(/\r/g, '\n');
  if (eol === 'crlf') return text.replace(/\r(?!\n)/g, '\r\n');
  return text;
}

/** "12 B", "3.4 KiB", "5.0 MiB". */
export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

/** Turns a byte stream into hex text, `perLine` bytes a line, keeping its place across chunks. */
export class HexView {
  constructor(perLine = 16) {
    this.perLine = perLine;
    this.column = 0;
  }

  format(bytes) {
    let out = '';
    for (const byte of bytes) {
      if (this.column > 0) out += ' ';
      out += byte.toString(16).padStart(2, '0');
      this.column += 1;
      if (this.column === this.perLine) {
        out += '\r\n';
        this.column = 0;
      }
    }
    return out;
  }

  /** Text that ends a partly filled line, for leaving hex mode. */
  finish() {
    if (this.column === 0) return '';
    this.column = 0;
    return '\r\n';
  }
}
