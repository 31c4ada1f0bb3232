import { describe, it, expect } from 'vitest';
import { ConfigError, parseUci, uciQuote, type UciFile } from '../../../src/config/uci.js';

const F = '/etc/config/vpnmasq';

function parse(text: string): UciFile {
  return parseUci(text, F);
}

/** The values of option `name` in the first section. */
function values(text: string, name = 'a'): string[] | undefined {
  return parse(text).sections[0]!.options.find((o) => o.name === name)?.values;
}

function value(raw: string): string | undefined {
  return values(`config t\n\toption a ${raw}\n`)?.[0];
}

function fails(text: string): ConfigError {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(text)}`);
}

function expectError(text: string, line: number, reason: string): void {
  const e = fails(text);
  expect(e.file).toBe(F);
  expect(e.line).toBe(line);
  expect(e.reason).toContain(reason);
  expect(e.message).toBe(`${F}:${line}: ${e.reason}`);
}

describe('uci parser: structure', () => {
  it('reads sections, names, options, lists and their lines', () => {
    const text = [
      "config vpnmasq 'main'", // 1
      "\toption lan_device 'br-lan'", // 2
      '', // 3
      '# a comment', // 4
      'config redirect', // 5
      "\tlist proto 'tcp'", // 6
      "\tlist proto 'udp'", // 7
      "\toption dest_ip '192.168.1.10'", // 8
    ].join('\n');
    expect(parse(text)).toEqual({
      file: F,
      sections: [
        {
          type: 'vpnmasq',
          name: 'main',
          line: 1,
          options: [{ name: 'lan_device', list: false, values: ['br-lan'], lines: [2], line: 2 }],
        },
        {
          type: 'redirect',
          name: null,
          line: 5,
          options: [
            { name: 'proto', list: true, values: ['tcp', 'udp'], lines: [6, 7], line: 6 },
            { name: 'dest_ip', list: false, values: ['192.168.1.10'], lines: [8], line: 8 },
          ],
        },
      ],
    });
  });

  it('accepts the one-letter keywords uci accepts', () => {
    const f = parse("p vpnmasq\nc t 'n'\no a 'b'\nl c 'd'\n");
    expect(f.sections).toEqual([
      {
        type: 't',
        name: 'n',
        line: 2,
        options: [
          { name: 'a', list: false, values: ['b'], lines: [3], line: 3 },
          { name: 'c', list: true, values: ['d'], lines: [4], line: 4 },
        ],
      },
    ]);
  });

  it('ignores package lines', () => {
    expect(parse('package vpnmasq\nconfig t\n').sections).toHaveLength(1);
    expect(parse("package 'my-pkg'\nconfig t\n").sections[0]!.line).toBe(2);
  });

  it('takes an empty name as anonymous', () => {
    expect(parse("config t ''\n").sections[0]!.name).toBeNull();
  });

  it('handles blank lines, tabs, spaces and CRLF line ends', () => {
    const text = '\r\n  \t\r\nconfig   t\t\tn \r\n \t option  a\t  b  \r\n\r\n\tlist c d\r\n';
    const f = parse(text);
    expect(f.sections[0]).toMatchObject({ type: 't', name: 'n', line: 3 });
    expect(f.sections[0]!.options).toEqual([
      { name: 'a', list: false, values: ['b'], lines: [4], line: 4 },
      { name: 'c', list: true, values: ['d'], lines: [6], line: 6 },
    ]);
  });

  it('parses a file without a final newline', () => {
    expect(values('config t\n\toption a b')).toEqual(['b']);
  });

  it('accepts an empty file and a comment-only file', () => {
    expect(parse('').sections).toEqual([]);
    expect(parse('# nothing\n\n   # here\n').sections).toEqual([]);
  });
});

describe('uci parser: values', () => {
  it('reads single quotes literally', () => {
    expect(value("'a b'")).toBe('a b');
    expect(value("'a\\nb'")).toBe('a\\nb');
    expect(value("'say \"hi\"'")).toBe('say "hi"');
    expect(value("'a # b'")).toBe('a # b');
  });

  it('drops a backslash and keeps the next character in double quotes', () => {
    expect(value('"a b"')).toBe('a b');
    expect(value('"a\\"b"')).toBe('a"b');
    expect(value('"a\\\\b"')).toBe('a\\b');
    expect(value('"a\\nb"')).toBe('anb');
    expect(value("\"it's\"")).toBe("it's");
    expect(value('"# not a comment"')).toBe('# not a comment');
  });

  it('reads unquoted values with backslash escapes', () => {
    expect(value('plain')).toBe('plain');
    expect(value('a\\ b')).toBe('a b');
    expect(value("a\\'b")).toBe("a'b");
    expect(value('a\\#b')).toBe('a#b');
    expect(value('a\\;b')).toBe('a;b');
  });

  it('concatenates adjacent quoted and unquoted pieces', () => {
    expect(value('\'a\'"b"c')).toBe('abc');
    expect(value("'it'\\''s'")).toBe("it's");
  });

  it('keeps a newline inside quotes', () => {
    const f = parse("config t\n\toption a 'one\ntwo'\n\toption b \"x\ny\"\n\toption c d\n");
    const [a, b, c] = f.sections[0]!.options;
    expect(a).toMatchObject({ values: ['one\ntwo'], line: 2 });
    expect(b).toMatchObject({ values: ['x\ny'], line: 4 });
    expect(c).toMatchObject({ values: ['d'], line: 6 });
  });

  it('joins a line ending in a backslash with the next one', () => {
    const f = parse('config t\n\toption a one\\\ntwo\n\toption b "x\\\ny"\n\toption c \'p\\\nq\'\n');
    const [a, b, c] = f.sections[0]!.options;
    expect(a).toMatchObject({ values: ['onetwo'], line: 2 });
    expect(b).toMatchObject({ values: ['xy'], line: 4 });
    // no escapes inside single quotes: backslash and newline stay
    expect(c).toMatchObject({ values: ['p\\\nq'], line: 6 });
  });

  it('treats # as a comment after a value, also mid-word', () => {
    expect(value("'b' # trailing")).toBe('b');
    expect(value('b #trailing')).toBe('b');
    expect(value('b#c')).toBe('b');
    expect(parse("config t # a comment\n").sections[0]!.name).toBeNull();
    expect(parse("config t 'n' # a comment\n").sections[0]!.name).toBe('n');
  });

  it("leaves an option set to '' unset, as uci does, but keeps an empty list item", () => {
    expect(values("config t\n\toption a ''\n")).toBeUndefined();
    expect(values('config t\n\toption a ""\n')).toBeUndefined();
    expect(values("config t\n\tlist a ''\n\tlist a 'x'\n")).toEqual(['', 'x']);
  });

  it('splits commands on ; the way uci does', () => {
    const f = parse("config t n\n\toption a 'b'; option c 'd'\n\toption e f ; option g h\n");
    expect(f.sections[0]!.options.map((o) => [o.name, o.values[0]])).toEqual([
      ['a', 'b'],
      ['c', 'd'],
      ['e', 'f'],
      ['g', 'h'],
    ]);
    expect(values('config t\n\toption a b;\n')).toEqual(['b']);
    expect(values('config t\n\toption a b; # comment\n')).toEqual(['b']);
  });

  it('keeps values byte-exact, including non-ASCII text', () => {
    expect(value("'Grüße, 世界'")).toBe('Grüße, 世界');
  });
});

describe('uci parser: errors', () => {
  it('unterminated quotes, at the line the quote opened', () => {
    expectError("config t\n\toption a 'open\nmore\n", 2, "unterminated ' quote");
    expectError('config t\n\toption a "open\n', 2, 'unterminated " quote');
    expectError("config 'type\n", 1, "unterminated ' quote");
  });

  it('an option or list outside a section', () => {
    expectError("# header\noption a 'b'\n", 2, 'option outside a section');
    expectError("list a 'b'\n", 1, 'list outside a section');
  });

  it('a missing value', () => {
    expectError('config t\n\toption a\n', 2, 'option a: missing value');
    expectError('config t\n\toption a   # comment\n', 2, 'option a: missing value');
    expectError('config t\n\tlist a\n', 2, 'list a: missing value');
    expectError('config t\n\toption a', 2, 'option a: missing value');
  });

  it('a missing name or type', () => {
    expectError('config t\n\toption\n', 2, 'option: missing option name');
    expectError('config t\n\toption ', 2, 'option: missing option name');
    expectError('config t\n\tlist\n', 2, 'list: missing option name');
    expectError('config\n', 1, 'config: missing section type');
    expectError('config  \n', 1, 'config: missing section type');
    expectError('package\n', 1, 'package: missing package name');
  });

  it('an unknown keyword', () => {
    expectError('config t\n\toptions a b\n', 2, "unknown keyword 'options'");
    expectError("\nsection t\n", 2, "unknown keyword 'section'");
    expectError('config t\n\t"option" a b\n', 2, 'unknown keyword');
    expectError('\ufeffconfig t\n', 1, 'byte order mark');
  });

  it('an option given twice', () => {
    expectError("config t\n\toption a 'x'\n\toption a 'y'\n", 3, 'option a: already given at line 2');
    expectError("config t\n\toption a ''\n\toption a 'y'\n", 3, 'already given at line 2');
  });

  it('option and list of the same name', () => {
    expectError("config t\n\toption a 'x'\n\tlist a 'y'\n", 3, 'list a: already given as option at line 2');
    expectError("config t\n\tlist a 'x'\n\toption a 'y'\n", 3, 'option a: already given as list at line 2');
  });

  it('a named section defined twice', () => {
    expectError("config t 'n'\nconfig t 'm'\nconfig u 'n'\n", 3, "section 'n' is already defined at line 1");
  });

  it('too many arguments', () => {
    expectError("config t 'n' extra\n", 1, "config: unexpected extra argument 'extra'");
    expectError("config t\n\toption a 'b' 'c'\n", 2, "option a: unexpected extra argument 'c'");
    expectError('package a b\n', 1, 'unexpected extra argument');
  });

  it('invalid names and types', () => {
    expectError("config t 'my-name'\n", 1, "invalid section name 'my-name'");
    expectError("config t\n\toption 'dest-ip' x\n", 2, "invalid option name 'dest-ip'");
    expectError("config 'a b'\n", 1, "invalid section type 'a b'");
    expectError("package 'a.b'\n", 1, 'invalid package name');
  });

  it('commands after an unquoted value glued to ;, which uci silently drops', () => {
    expectError('config t\n\toption a b;option c d\n', 2, "directly followed by ';'");
  });

  it('a NUL byte', () => {
    expectError('config t\n\toption a b\0c\n', 2, 'NUL byte');
  });
});

describe('uciQuote', () => {
  it('quotes like uci export and parses back', () => {
    expect(uciQuote('br-lan')).toBe("'br-lan'");
    expect(uciQuote("it's")).toBe("'it'\\''s'");
    for (const s of ["it's", "''", 'a\\b', 'x\ny', '"q"', ' # ;', '\\']) {
      expect(value(uciQuote(s))).toBe(s);
    }
  });
});
