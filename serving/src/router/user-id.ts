/**
 * The user a routed request is about, read without parsing the whole body: the router only needs
 * the top-level `userId` of a JSON body, and JSON.parse of every body (plus the string it needs)
 * was a measurable share of the router's CPU. The scanner walks the bytes once, validating the
 * JSON grammar as it goes, and decodes only the strings it must (the userId value, and a key
 * only when it has escapes). For any input it answers exactly what
 * `JSON.parse(body.toString('utf8')).userId` would (when a string; undefined when the body is not
 * valid JSON, not an object, has no userId or a userId that is not a string), the last duplicate
 * key winning as in JSON.parse.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const USER_ID = Buffer.from('userId');

/** The user a request is about: the `/v1/users/{id}` path segment or the JSON body's userId. */
export function userIdOf(url: string, body: Buffer | undefined): string | undefined {
  if (url.startsWith('/v1/users/')) {
    const m = /^\/v1\/users\/([^/?]+)/.exec(url);
    if (m) {
      try {
        return decodeURIComponent(m[1]!);
      } catch {
        return undefined;
      }
    }
  }
  if (!body || body.length === 0) return undefined;
  return bodyUserId(body);
}

/** Thrown (and caught at the top) for any byte sequence JSON.parse would refuse. */
class Invalid extends Error {}
const INVALID = new Invalid();

/** The top-level `userId` string of a JSON body, as JSON.parse would read it, or undefined. */
export function bodyUserId(b: Buffer): string | undefined {
  try {
    return new Scanner(b).document();
  } catch (err) {
    if (err === INVALID) return undefined;
    throw err;
  }
}

class Scanner {
  private i = 0;
  constructor(private readonly b: Buffer) {}

  document(): string | undefined {
    this.ws();
    let result: string | undefined;
    if (this.b[this.i] === 0x7b) result = this.topObject();
    else this.value();
    this.ws();
    if (this.i !== this.b.length) throw INVALID;
    return result;
  }

  private ws(): void {
    const b = this.b;
    let i = this.i;
    for (;;) {
      const c = b[i];
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
    this.i = i;
  }

  /** The top-level object: its last `userId` member, if a string. */
  private topObject(): string | undefined {
    const b = this.b;
    this.i++; // {
    this.ws();
    let result: string | undefined;
    if (b[this.i] === 0x7d) {
      this.i++;
      return undefined;
    }
    for (;;) {
      if (b[this.i] !== QUOTE) throw INVALID;
      const keyStart = this.i + 1;
      const escaped = this.string();
      const isUserId = escaped
        ? decode(b, keyStart, this.i - 1, true) === 'userId'
        : this.i - 1 - keyStart === USER_ID.length && b.compare(USER_ID, 0, 6, keyStart, keyStart + 6) === 0;
      this.ws();
      if (b[this.i] !== 0x3a) throw INVALID;
      this.i++;
      this.ws();
      if (isUserId) {
        if (b[this.i] === QUOTE) {
          const start = this.i + 1;
          const esc = this.string();
          result = decode(b, start, this.i - 1, esc);
        } else {
          this.value();
          result = undefined;
        }
      } else this.value();
      this.ws();
      const c = b[this.i];
      this.i++;
      if (c === 0x7d) return result;
      if (c !== 0x2c) throw INVALID;
      this.ws();
    }
  }

  /** Skips a string starting at its opening quote; true when it has escapes. */
  private string(): boolean {
    const b = this.b;
    let i = this.i + 1;
    let escaped = false;
    for (;;) {
      const c = b[i];
      if (c === undefined || c < 0x20) throw INVALID;
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        escaped = true;
        const e = b[i + 1];
        if (e === 0x75) {
          for (let k = 2; k < 6; k++) if (!isHex(b[i + k])) throw INVALID;
          i += 6;
        } else if (
          e === QUOTE ||
          e === BACKSLASH ||
          e === 0x2f ||
          e === 0x62 ||
          e === 0x66 ||
          e === 0x6e ||
          e === 0x72 ||
          e === 0x74
        )
          i += 2;
        else throw INVALID;
      } else i++;
    }
    this.i = i + 1;
    return escaped;
  }

  /** Skips any value (iteratively: nesting depth is bounded only by the body). */
  private value(): void {
    const b = this.b;
    // 1 = in an array, 2 = in an object
    const stack: number[] = [];
    for (;;) {
      // a value at this.i
      const c = b[this.i];
      if (c === QUOTE) this.string();
      else if (c === 0x7b || c === 0x5b) {
        this.i++;
        this.ws();
        const close = c === 0x7b ? 0x7d : 0x5d;
        if (b[this.i] === close) this.i++;
        else {
          stack.push(c === 0x7b ? 2 : 1);
          if (c === 0x7b) this.memberKey();
          continue;
        }
      } else if (c === 0x74) this.literal('true');
      else if (c === 0x66) this.literal('false');
      else if (c === 0x6e) this.literal('null');
      else this.number();
      // after a value: close containers or go to the next element
      for (;;) {
        if (stack.length === 0) return;
        this.ws();
        const d = b[this.i];
        const top = stack[stack.length - 1]!;
        this.i++;
        if (d === 0x2c) {
          this.ws();
          if (top === 2) this.memberKey();
          break;
        }
        if ((top === 1 && d === 0x5d) || (top === 2 && d === 0x7d)) {
          stack.pop();
          continue;
        }
        throw INVALID;
      }
    }
  }

  /** A member's `"key" :` inside a nested object, leaving this.i at its value. */
  private memberKey(): void {
    if (this.b[this.i] !== QUOTE) throw INVALID;
    this.string();
    this.ws();
    if (this.b[this.i] !== 0x3a) throw INVALID;
    this.i++;
    this.ws();
  }

  private literal(word: string): void {
    const b = this.b;
    for (let k = 0; k < word.length; k++) if (b[this.i + k] !== word.charCodeAt(k)) throw INVALID;
    this.i += word.length;
  }

  /** -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
  private number(): void {
    const b = this.b;
    let i = this.i;
    if (b[i] === 0x2d) i++;
    if (b[i] === 0x30) i++;
    else if (isDigit(b[i])) while (isDigit(b[i])) i++;
    else throw INVALID;
    if (b[i] === 0x2e) {
      i++;
      if (!isDigit(b[i])) throw INVALID;
      while (isDigit(b[i])) i++;
    }
    if (b[i] === 0x65 || b[i] === 0x45) {
      i++;
      if (b[i] === 0x2b || b[i] === 0x2d) i++;
      if (!isDigit(b[i])) throw INVALID;
      while (isDigit(b[i])) i++;
    }
    this.i = i;
  }
}

const isDigit = (c: number | undefined) => c !== undefined && c >= 0x30 && c <= 0x39;
const isHex = (c: number | undefined) =>
  c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));

/**
 * A string's content [start, end) as JSON.parse gives it. The bounds are ASCII quotes, so
 * decoding the slice as UTF-8 gives the same characters as decoding the whole body would.
 */
function decode(b: Buffer, start: number, end: number, escaped: boolean): string {
  const s = b.toString('utf8', start, end);
  return escaped ? (JSON.parse(`"${s}"`) as string) : s;
}
