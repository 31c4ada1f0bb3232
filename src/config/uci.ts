// UCI file parser.
//
// This is a faithful port of the tokenizer in libuci's file.c
// (uci_parse_line / next_arg / parse_str / parse_*_quote / parse_backslash),
// so a file is read the way `uci` reads it, including its less obvious rules:
//
//   * keywords: `package`, `config`, `option`, `list`, and their one-letter
//     abbreviations `p`, `c`, `o`, `l`; a word starting with `#` ends the line;
//   * values: 'single quoted' (no escapes at all), "double quoted" (backslash
//     drops itself and keeps the next character) or unquoted (same backslash
//     rule); adjacent pieces concatenate ('a'"b"c is "abc");
//   * a backslash at the end of a line joins the next line (the newline is
//     dropped); a newline inside quotes is kept in the value;
//   * an unquoted `#` ends the value and starts a comment, also mid-word
//     (`option a b#c` is "b");
//   * `;` separates commands on one line, with uci's quirks preserved;
//   * names (section and option) are letters, digits and `_`; section types
//     are printable ASCII; package names also allow `-`;
//   * `option x ''` means "not set" (uci never creates an empty option),
//     while `list x ''` adds an empty item.
//
// On top of uci's own rules this parser is deliberately stricter where uci's
// behaviour silently hides mistakes; each of these is a ConfigError:
//
//   * `option x` with no value at all (uci: a no-op);
//   * the same option given twice in a section (uci: the last one wins);
//   * `option x` and `list x` mixed in one section (uci: converts to a list);
//   * a named section defined twice (uci: merges or overwrites);
//   * extra arguments, which uci also refuses in its default strict mode;
//   * `option a b;option c d`: libuci overwrites the `;` after an unquoted
//     value with the value's terminator and silently drops the rest of the
//     line (`option a 'b'; option c d` and `option a b ; option c d` work);
//   * NUL bytes anywhere in the file.
//
// Errors are reported as `FILE:LINE: reason`, LINE counting from 1: the
// line being read when the problem shows (as uci reports it), except that an
// unterminated quote is reported where the quote opened, not at end of file,
// and problems with a whole command (a duplicate option, say) at the line of
// its keyword.

/** A configuration problem, reported as `FILE:LINE: reason` (LINE 0: the file as a whole). */
export class ConfigError extends Error {
  readonly file: string;
  readonly line: number;
  readonly reason: string;

  /**
   * Every problem found in the file, in the order found; this error (the
   * first) is `all[0]`. A file is checked to the end, so one run of
   * `check-config` shows all its mistakes.
   */
  all: readonly ConfigError[];

  constructor(file: string, line: number, reason: string) {
    super(`${file}:${line}: ${reason}`);
    this.name = 'ConfigError';
    this.file = file;
    this.line = line;
    this.reason = reason;
    this.all = [this];
  }

  /** The first of `errors` in file order, carrying them all in file order (duplicates removed). */
  static of(errors: readonly ConfigError[]): ConfigError {
    const seen = new Set<string>();
    const all = errors
      .filter((e) => (seen.has(e.message) ? false : (seen.add(e.message), true)))
      .sort((a, b) => a.line - b.line);
    const first = all[0]!;
    first.all = all;
    return first;
  }

  /** Every problem, one `FILE:LINE: reason` per line, each after `prefix`. */
  lines(prefix = ''): string {
    return this.all.map((e) => prefix + e.message).join('\n');
  }
}

/** One `option` or the collected `list` entries of one name in a section. */
export interface UciOption {
  name: string;
  /** true for `list`, false for `option`. */
  list: boolean;
  /** The value (`option`, exactly one) or the list items in file order. */
  values: string[];
  /** The line of each value's `option`/`list` keyword, parallel to `values`. */
  lines: number[];
  /** The line of the first `option`/`list` keyword for this name. */
  line: number;
}

export interface UciSection {
  type: string;
  /** The section name, or null for an anonymous section. */
  name: string | null;
  /** The line of the `config` keyword. */
  line: number;
  /** Options in the order they first appear. */
  options: UciOption[];
}

export interface UciFile {
  file: string;
  sections: UciSection[];
}

const NUL = 0;
const TAB = 9;
const LF = 10;
const CR = 13;
const SP = 32;
const DQUOTE = 34;
const HASH = 35;
const SQUOTE = 39;
const SEMI = 59;
const BACKSLASH = 92;

/** C isspace() in the C locale. */
function isSpace(c: number): boolean {
  return c === SP || (c >= TAB && c <= CR);
}

function isAlnum(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

/** libuci uci_validate_str(). */
function validStr(s: string, name: boolean, pkg: boolean): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (isAlnum(c) || c === 95 /* _ */) continue;
    if (c === 45 /* - */ && pkg) continue;
    if (name || c < 33 || c > 126) return false;
  }
  return true;
}

/** Shows a user-supplied word in a message without letting it break the line. */
function show(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}...` : s).slice(1, -1);
}

interface Arg {
  text: string;
  /** Whether any value characters or quotes were present (uci cannot tell '' from nothing). */
  present: boolean;
}

/**
 * The line buffer works like libuci's: a mutable array of character codes,
 * NUL terminated, that holds the current line and any continuation lines
 * fetched by quotes or trailing backslashes. Parsing rewrites it in place
 * exactly as the C code does, which is what makes the `;` and `#` edge
 * cases come out the same.
 */
class Parser {
  private readonly src: string;
  private readonly file: string;
  private fetchAt = 0;
  private buf: number[] = [NUL];
  private filled = 0;
  private pos = 0;
  private tgt = 0;
  private present = false;
  private line = 0;
  private cmdLine = 0;

  private readonly sections: UciSection[] = [];
  private section: UciSection | null = null;
  private sectionOpts = new Map<string, UciOption>();
  /** Option names set to '' (uci: unset), remembered to catch a second definition. */
  private sectionEmpty = new Map<string, number>();
  private readonly named = new Map<string, UciSection>();

  constructor(src: string, file: string) {
    this.src = src;
    this.file = file;
  }

  private fail(line: number, reason: string): never {
    throw new ConfigError(this.file, line, reason);
  }

  private ch(i: number): number {
    return i < this.buf.length ? this.buf[i]! : NUL;
  }

  /** uci_getln(): append the next physical line at `offset`. */
  private getln(offset: number): void {
    this.buf.length = offset;
    if (this.fetchAt >= this.src.length) {
      this.buf.push(NUL);
      return;
    }
    let end = this.src.indexOf('\n', this.fetchAt);
    end = end < 0 ? this.src.length : end + 1;
    for (let i = this.fetchAt; i < end; i++) this.buf.push(this.src.charCodeAt(i));
    this.buf.push(NUL);
    this.filled = offset + (end - this.fetchAt);
    this.fetchAt = end;
    this.line++;
  }

  private strAt(i: number): string {
    let s = '';
    for (; this.ch(i) !== NUL; i++) s += String.fromCharCode(this.ch(i));
    return s;
  }

  private skipWhitespace(): void {
    while (this.ch(this.pos) !== NUL && isSpace(this.ch(this.pos))) this.pos++;
  }

  private addc(): void {
    this.buf[this.tgt] = this.buf[this.pos]!;
    this.tgt++;
    this.pos++;
    this.present = true;
  }

  /** parse_backslash(): true if the escaped character is to be kept. */
  private backslash(): boolean {
    this.pos++;
    const c = this.ch(this.pos);
    if (c === NUL || c === LF || (c === CR && this.ch(this.pos + 1) === LF && this.ch(this.pos + 2) === NUL)) {
      this.getln(this.pos);
      return false;
    }
    return true;
  }

  private doubleQuote(): void {
    const opened = this.line;
    this.present = true;
    this.pos++;
    for (;;) {
      const c = this.ch(this.pos);
      if (c === DQUOTE) {
        this.pos++;
        return;
      }
      if (c === NUL) {
        this.getln(this.pos);
        if (this.ch(this.pos) === NUL) this.fail(opened, 'unterminated " quote (opened on this line, still open at end of file)');
        continue;
      }
      if (c === BACKSLASH && !this.backslash()) continue;
      this.addc();
    }
  }

  private singleQuote(): void {
    const opened = this.line;
    this.present = true;
    this.pos++;
    for (;;) {
      const c = this.ch(this.pos);
      if (c === SQUOTE) {
        this.pos++;
        return;
      }
      if (c === NUL) {
        this.getln(this.pos);
        if (this.ch(this.pos) === NUL) this.fail(opened, "unterminated ' quote (opened on this line, still open at end of file)");
        continue;
      }
      this.addc();
    }
  }

  /** parse_str() */
  private parseStr(): void {
    let next = true;
    do {
      const c = this.ch(this.pos);
      if (c === SQUOTE) this.singleQuote();
      else if (c === DQUOTE) this.doubleQuote();
      else if (c === HASH) {
        this.buf[this.pos] = NUL;
        break;
      } else if (c === NUL) break;
      else if (c === SEMI) {
        next = false;
        break;
      } else if (c === BACKSLASH) {
        if (!this.backslash()) continue;
        this.addc();
      } else this.addc();
    } while (this.ch(this.pos) !== NUL && !isSpace(this.ch(this.pos)));
    if (!next && this.tgt === this.pos) {
      // libuci writes this value's terminator over the ';' itself, which
      // silently ends the line there. Refuse rather than drop commands.
      let i = this.pos + 1;
      while (this.ch(i) !== NUL && isSpace(this.ch(i))) i++;
      if (this.ch(i) !== NUL && this.ch(i) !== HASH) {
        this.fail(this.line, "uci ignores everything after an unquoted value directly followed by ';'; put each command on its own line");
      }
    }
    if (this.ch(this.pos) !== NUL && next) this.pos++;
    this.buf[this.tgt] = NUL;
  }

  /** next_arg() */
  private nextArg(): Arg {
    this.skipWhitespace();
    const val = this.pos;
    this.tgt = this.pos;
    this.present = false;
    if (this.ch(this.pos) === SEMI) {
      this.buf[this.pos] = NUL;
      this.pos++;
    } else {
      this.parseStr();
    }
    return { text: this.strAt(val), present: this.present };
  }

  /** assert_eol(), uci's strict mode */
  private assertEol(what: string): void {
    this.skipWhitespace();
    const extra = this.nextArg();
    if (extra.text !== '') this.fail(this.line, `${what}: unexpected extra argument '${show(extra.text)}'`);
  }

  /** uci_increase_pos() past the keyword that strtok() terminated. */
  private pastKeyword(reason: string): void {
    let n = 0;
    while (this.ch(this.pos + n) !== NUL) n++;
    if (this.pos + n + 1 > this.filled) this.fail(this.line, reason);
    this.pos += n + 1;
  }

  run(): UciFile {
    const nul = this.src.indexOf('\0');
    if (nul >= 0) this.fail(this.src.slice(0, nul).split('\n').length, 'NUL byte in file');
    while (this.fetchAt < this.src.length) {
      this.pos = 0;
      this.getln(0);
      if (this.ch(0) !== NUL) this.parseLine();
    }
    this.closeSection();
    return { file: this.file, sections: this.sections };
  }

  /** uci_parse_line() */
  private parseLine(): void {
    this.skipWhitespace();
    for (;;) {
      // strtok(cur, " \t")
      let i = this.pos;
      while (this.ch(i) === SP || this.ch(i) === TAB) i++;
      if (this.ch(i) === NUL) return;
      const start = i;
      while (this.ch(i) !== NUL && this.ch(i) !== SP && this.ch(i) !== TAB) i++;
      if (this.ch(i) !== NUL) this.buf[i] = NUL;
      const word = this.strAt(start);
      this.cmdLine = this.line;
      if (word.charCodeAt(0) === HASH) return;
      switch (word) {
        case 'p':
        case 'package':
          this.parsePackage();
          break;
        case 'c':
        case 'config':
          this.parseConfig();
          break;
        case 'o':
        case 'option':
          this.parseOption(false);
          break;
        case 'l':
        case 'list':
          this.parseOption(true);
          break;
        default:
          this.badKeyword(word);
      }
    }
  }

  private badKeyword(word: string): never {
    const bare = word.replace(/[\s]+$/, '');
    const missing: Record<string, string> = {
      p: 'package: missing package name',
      package: 'package: missing package name',
      c: 'config: missing section type',
      config: 'config: missing section type',
      o: 'option: missing option name',
      option: 'option: missing option name',
      l: 'list: missing option name',
      list: 'list: missing option name',
    };
    if (bare !== word && missing[bare]) this.fail(this.cmdLine, missing[bare]);
    if (word.charCodeAt(0) === 0xfeff) this.fail(this.cmdLine, 'file starts with a byte order mark (BOM), which uci does not accept');
    this.fail(this.cmdLine, `unknown keyword '${show(bare)}' (expected config, option, list or package)`);
  }

  private parsePackage(): void {
    this.pastKeyword('package: missing package name');
    const name = this.nextArg();
    if (name.text === '') this.fail(this.line, 'package: missing package name');
    if (!validStr(name.text, true, true)) {
      this.fail(this.line, `package: invalid package name '${show(name.text)}' (letters, digits, '_' and '-' only)`);
    }
    this.assertEol('package');
    // uci reads a single config file with `package` lines ignored.
  }

  private parseConfig(): void {
    this.pastKeyword('config: missing section type');
    const type = this.nextArg();
    if (type.text === '') this.fail(this.line, 'config: missing section type');
    if (!validStr(type.text, false, false)) {
      this.fail(this.line, `config: invalid section type '${show(type.text)}' (printable ASCII without spaces only)`);
    }
    const name = this.nextArg();
    if (name.text !== '' && !validStr(name.text, true, false)) {
      this.fail(this.line, `config: invalid section name '${show(name.text)}' (letters, digits and '_' only)`);
    }
    this.assertEol('config');

    this.closeSection();
    const sec: UciSection = { type: type.text, name: name.text === '' ? null : name.text, line: this.cmdLine, options: [] };
    if (sec.name !== null) {
      const prev = this.named.get(sec.name);
      if (prev) {
        this.fail(this.cmdLine, `config: section '${sec.name}' is already defined at line ${prev.line}`);
      }
      this.named.set(sec.name, sec);
    }
    this.section = sec;
  }

  private closeSection(): void {
    if (this.section) this.sections.push(this.section);
    this.section = null;
    this.sectionOpts = new Map();
    this.sectionEmpty = new Map();
  }

  private parseOption(list: boolean): void {
    const kw = list ? 'list' : 'option';
    if (!this.section) this.fail(this.cmdLine, `${kw} outside a section (no 'config' line before it)`);
    this.pastKeyword(`${kw}: missing option name`);
    const name = this.nextArg();
    if (name.text === '') this.fail(this.line, `${kw}: missing option name`);
    if (!validStr(name.text, true, false)) {
      this.fail(this.line, `${kw}: invalid option name '${show(name.text)}' (letters, digits and '_' only)`);
    }
    const value = this.nextArg();
    this.assertEol(`${kw} ${name.text}`);

    const line = this.cmdLine;
    if (!value.present) this.fail(line, `${kw} ${name.text}: missing value`);

    const prev = this.sectionOpts.get(name.text);
    const prevEmpty = this.sectionEmpty.get(name.text);
    if (prev && prev.list !== list) {
      this.fail(line, `${kw} ${name.text}: already given as ${prev.list ? 'list' : 'option'} at line ${prev.line}; use either option or list`);
    }
    if (prevEmpty !== undefined) {
      this.fail(line, `${kw} ${name.text}: already given at line ${prevEmpty}`);
    }
    if (prev && !list) this.fail(line, `option ${name.text}: already given at line ${prev.line}`);

    if (!list && value.text === '') {
      // uci: setting an option to '' leaves it unset.
      this.sectionEmpty.set(name.text, line);
      return;
    }
    if (prev) {
      prev.values.push(value.text);
      prev.lines.push(line);
      return;
    }
    const opt: UciOption = { name: name.text, list, values: [value.text], lines: [line], line };
    this.sectionOpts.set(name.text, opt);
    this.section!.options.push(opt);
  }
}

/**
 * Parses UCI text. `file` is used in error messages only.
 * Throws ConfigError on any syntax error and on nothing else.
 */
export function parseUci(text: string, file: string): UciFile {
  try {
    return new Parser(text, file).run();
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    // Not expected; keep the contract that only ConfigError escapes.
    throw new ConfigError(file, 0, `internal parser error: ${(e as Error)?.message ?? String(e)}`);
  }
}

/** Quotes a value the way `uci export` does: '...' with ' written as '\''. */
export function uciQuote(value: string): string {
  return `'${value.split("'").join("'\\''")}'`;
}
