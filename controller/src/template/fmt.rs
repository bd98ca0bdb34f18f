//! Go's `fmt` printing (`Sprint`, `Sprintln`, `Sprintf`) and the `strconv` quoting and
//! float formatting it relies on, over the [`Value`] model.
//!
//! What templates print goes through here: an action's value (`{{ .x }}` is
//! `fmt.Fprint`), `print`/`printf`/`println`, sprig's `quote`, `cat`, `toString`, and
//! the values quoted in error messages. The output matches Go's for the verbs
//! `%v %+v %s %q %d %b %o %O %x %X %c %U %t %e %E %f %F %g %G %T %%`, flags `+ - # 0 space`,
//! widths and precisions (literal, `*`, and `[n]` argument indexes), and Go's
//! error forms (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA int=1)`, `%!(NOVERB)`,
//! `%!(BADWIDTH)`, `%!(BADPREC)`, `%!v(BADINDEX)`).
//!
//! Not covered: `%#v` Go-syntax output (printed as `%v`), `%p`, and hexadecimal or
//! binary float formats (`%x`, `%b` on a float print as `%g`).
//!
//! Printing never recurses without bound: containers nested deeper than
//! [`MAX_DEPTH`] (only a map that holds itself gets there) print as `<...>`, and the
//! printer stops appending once its output passes its byte limit and reports that it
//! overflowed.

use super::value::Value;

/// Deepest container nesting printed; deeper levels print as `<...>`.
pub const MAX_DEPTH: usize = 64;

/// Go's limit on a width or precision given in a format.
const TOO_LARGE: i64 = 1_000_000;

/// An output buffer with a byte limit: appends stop once it is passed.
#[derive(Debug)]
pub struct Printer {
    buf: String,
    limit: usize,
    overflow: bool,
}

impl Printer {
    /// A printer that stops appending after `limit` bytes.
    pub fn new(limit: usize) -> Printer {
        Printer {
            buf: String::new(),
            limit,
            overflow: false,
        }
    }

    fn push_str(&mut self, s: &str) {
        if self.overflow {
            return;
        }
        if self.buf.len() + s.len() > self.limit {
            self.overflow = true;
            return;
        }
        self.buf.push_str(s);
    }

    fn push(&mut self, c: char) {
        let mut b = [0u8; 4];
        self.push_str(c.encode_utf8(&mut b));
    }

    /// Whether output was dropped because the limit was reached.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// The text printed.
    pub fn finish(self) -> String {
        self.buf
    }
}

/// Formatting flags of one verb.
#[derive(Default, Clone, Copy)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    plus_v: bool,
    wid: Option<usize>,
    prec: Option<usize>,
}

/// `fmt.Sprint`: operands in `%v`, a space between two operands when neither is a string.
pub fn sprint(p: &mut Printer, args: &[Value]) {
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::Str(_));
        if i > 0 && !is_string && !prev_string {
            p.push(' ');
        }
        print_arg(p, a, 'v', Flags::default(), 0);
        prev_string = is_string;
    }
}

/// `fmt.Sprintln`: operands in `%v` separated by spaces, then a newline.
pub fn sprintln(p: &mut Printer, args: &[Value]) {
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            p.push(' ');
        }
        print_arg(p, a, 'v', Flags::default(), 0);
    }
    p.push('\n');
}

/// `fmt.Sprint` of one value into a new string (no limit beyond `limit`).
pub fn to_string(v: &Value, limit: usize) -> String {
    let mut p = Printer::new(limit);
    print_arg(&mut p, v, 'v', Flags::default(), 0);
    p.finish()
}

/// `fmt.Sprintf`.
pub fn sprintf(p: &mut Printer, format: &str, args: &[Value]) {
    let f = format.as_bytes();
    let end = f.len();
    let mut arg_num = 0usize;
    let mut reordered = false;
    let mut i = 0usize;
    'format: while i < end {
        let last = i;
        while i < end && f[i] != b'%' {
            i += 1;
        }
        if i > last {
            p.push_str(&format[last..i]);
        }
        if i >= end {
            break;
        }
        i += 1; // skip %
        let mut fl = Flags::default();
        let mut good_arg_num = true;
        // Flags, and the fast path for a simple verb right after them.
        while i < end {
            let c = f[i];
            match c {
                b'#' => fl.sharp = true,
                b'0' => fl.zero = !fl.minus,
                b'+' => fl.plus = true,
                b'-' => {
                    fl.minus = true;
                    fl.zero = false;
                }
                b' ' => fl.space = true,
                _ => {
                    if c.is_ascii_lowercase() && arg_num < args.len() {
                        let verb = c as char;
                        if verb == 'v' {
                            fl.plus_v = fl.plus;
                            fl.plus = false;
                            fl.sharp = false;
                        }
                        print_arg(p, &args[arg_num], verb, fl, 0);
                        arg_num += 1;
                        i += 1;
                        continue 'format;
                    }
                    break;
                }
            }
            i += 1;
        }
        // Argument index, width.
        let mut after_index;
        (arg_num, i, after_index) =
            arg_number(arg_num, f, i, args.len(), &mut reordered, &mut good_arg_num);
        if i < end && f[i] == b'*' {
            i += 1;
            let (w, ok, next) = int_from_arg(args, arg_num);
            arg_num = next;
            if !ok {
                p.push_str("%!(BADWIDTH)");
            } else if w < 0 {
                fl.wid = Some((-w) as usize);
                fl.minus = true;
                fl.zero = false;
            } else {
                fl.wid = Some(w as usize);
            }
            after_index = false;
        } else {
            let (w, present, next) = parse_num(f, i, end);
            i = next;
            if present {
                fl.wid = Some(w as usize);
                if after_index {
                    good_arg_num = false;
                }
            }
        }
        // Precision.
        if i + 1 < end && f[i] == b'.' {
            i += 1;
            if after_index {
                good_arg_num = false;
            }
            (arg_num, i, after_index) =
                arg_number(arg_num, f, i, args.len(), &mut reordered, &mut good_arg_num);
            if i < end && f[i] == b'*' {
                i += 1;
                let (pr, ok, next) = int_from_arg(args, arg_num);
                arg_num = next;
                if pr < 0 {
                    fl.prec = None;
                } else if ok {
                    fl.prec = Some(pr as usize);
                }
                if !ok {
                    p.push_str("%!(BADPREC)");
                }
                after_index = false;
            } else {
                let (pr, present, next) = parse_num(f, i, end);
                i = next;
                fl.prec = Some(if present { pr as usize } else { 0 });
            }
        }
        if !after_index {
            (arg_num, i, after_index) =
                arg_number(arg_num, f, i, args.len(), &mut reordered, &mut good_arg_num);
        }
        let _ = after_index;
        if i >= end {
            p.push_str("%!(NOVERB)");
            break;
        }
        let verb = format[i..].chars().next().unwrap_or('?');
        i += verb.len_utf8();
        if verb == '%' {
            p.push('%');
        } else if !good_arg_num {
            p.push_str("%!");
            p.push(verb);
            p.push_str("(BADINDEX)");
        } else if arg_num >= args.len() {
            p.push_str("%!");
            p.push(verb);
            p.push_str("(MISSING)");
        } else {
            if verb == 'v' {
                fl.plus_v = fl.plus;
                fl.plus = false;
                fl.sharp = false;
            }
            print_arg(p, &args[arg_num], verb, fl, 0);
            arg_num += 1;
        }
    }
    if !reordered && arg_num < args.len() {
        p.push_str("%!(EXTRA ");
        for (k, a) in args[arg_num..].iter().enumerate() {
            if k > 0 {
                p.push_str(", ");
            }
            match a.go_type() {
                Some(t) if !matches!(a, Value::Nil) => {
                    p.push_str(&t.to_string());
                    p.push('=');
                    print_arg(p, a, 'v', Flags::default(), 0);
                }
                _ => p.push_str("<nil>"),
            }
        }
        p.push(')');
    }
}

fn too_large(x: i64) -> bool {
    !(-TOO_LARGE..=TOO_LARGE).contains(&x)
}

/// Go's `parsenum`: digits at `start`; a too-large number consumes the rest.
fn parse_num(f: &[u8], start: usize, end: usize) -> (i64, bool, usize) {
    if start >= end {
        return (0, false, end);
    }
    let mut num = 0i64;
    let mut isnum = false;
    let mut i = start;
    while i < end && f[i].is_ascii_digit() {
        if too_large(num) {
            return (0, false, end);
        }
        num = num * 10 + i64::from(f[i] - b'0');
        isnum = true;
        i += 1;
    }
    (num, isnum, i)
}

fn arg_number(
    arg_num: usize,
    f: &[u8],
    i: usize,
    num_args: usize,
    reordered: &mut bool,
    good: &mut bool,
) -> (usize, usize, bool) {
    if f.len() <= i || f[i] != b'[' {
        return (arg_num, i, false);
    }
    *reordered = true;
    // parseArgNumber
    let rest = &f[i..];
    let (index, wid, ok) = if rest.len() < 3 {
        (0i64, 1usize, false)
    } else {
        let mut res = (0i64, 1usize, false);
        for k in 1..rest.len() {
            if rest[k] == b']' {
                let (w, ok, newi) = parse_num(rest, 1, k);
                res = if !ok || newi != k {
                    (0, k + 1, false)
                } else {
                    (w - 1, k + 1, true)
                };
                break;
            }
        }
        res
    };
    if ok && index >= 0 && (index as usize) < num_args {
        return (index as usize, i + wid, true);
    }
    *good = false;
    (arg_num, i + wid, ok)
}

fn int_from_arg(args: &[Value], arg_num: usize) -> (i64, bool, usize) {
    if arg_num >= args.len() {
        return (0, false, arg_num);
    }
    match args[arg_num].as_int() {
        Some(n) if !too_large(n) => (n, true, arg_num + 1),
        _ => (0, false, arg_num + 1),
    }
}

/// Print one operand with one verb (Go's `printArg`/`printValue`).
fn print_arg(p: &mut Printer, v: &Value, verb: char, fl: Flags, depth: usize) {
    if depth > MAX_DEPTH {
        p.push_str("<...>");
        return;
    }
    if verb == 'T' {
        match v.go_type() {
            Some(t) if !matches!(v, Value::Nil) => pad(p, &t.to_string(), fl),
            _ => pad(p, "<nil>", fl),
        }
        return;
    }
    match v {
        Value::Invalid | Value::Nil => {
            if verb == 'v' || depth > 0 {
                pad(p, "<nil>", fl);
            } else {
                bad_verb(p, v, verb);
            }
        }
        Value::Bool(b) => match verb {
            't' | 'v' => pad(p, if *b { "true" } else { "false" }, fl),
            _ => bad_verb(p, v, verb),
        },
        Value::Int(i) | Value::Int64(i) => fmt_integer(p, v, *i, verb, fl),
        Value::Float(x) => fmt_float_verb(p, v, *x, verb, fl),
        Value::Str(s) => match verb {
            'v' | 's' => fmt_s(p, s, fl),
            'x' => fmt_sx(p, s, fl, false),
            'X' => fmt_sx(p, s, fl, true),
            'q' => fmt_q(p, s, fl),
            _ => bad_verb(p, v, verb),
        },
        Value::Slice(s) => {
            p.push('[');
            for (k, item) in s.items.iter().enumerate() {
                if k > 0 {
                    p.push(' ');
                }
                print_arg(p, item, verb, fl, depth + 1);
            }
            p.push(']');
        }
        Value::Map(m) => {
            let m = m.borrow();
            p.push_str("map[");
            for (k, (key, val)) in m.entries.iter().enumerate() {
                if k > 0 {
                    p.push(' ');
                }
                print_arg(p, &Value::str(key), verb, fl, depth + 1);
                p.push(':');
                print_arg(p, val, verb, fl, depth + 1);
            }
            p.push(']');
        }
        Value::Struct(s) => {
            p.push('{');
            for (k, (name, val)) in s.fields.iter().enumerate() {
                if k > 0 {
                    p.push(' ');
                }
                if fl.plus_v {
                    p.push_str(name);
                    p.push(':');
                }
                print_arg(p, val, verb, fl, depth + 1);
            }
            p.push('}');
        }
    }
}

fn bad_verb(p: &mut Printer, v: &Value, verb: char) {
    p.push_str("%!");
    p.push(verb);
    p.push('(');
    match v.go_type() {
        Some(t) if !matches!(v, Value::Nil) => {
            p.push_str(&t.to_string());
            p.push('=');
            print_arg(p, v, 'v', Flags::default(), 0);
        }
        _ => p.push_str("<nil>"),
    }
    p.push(')');
}

/// Pad `s` to the width (counted in characters), left or right, with spaces or zeros.
fn pad(p: &mut Printer, s: &str, fl: Flags) {
    let Some(w) = fl.wid else {
        p.push_str(s);
        return;
    };
    let n = s.chars().count();
    if n >= w {
        p.push_str(s);
        return;
    }
    let fill = if fl.zero { "0" } else { " " }.repeat(w - n);
    if fl.minus {
        p.push_str(s);
        p.push_str(&" ".repeat(w - n));
    } else {
        p.push_str(&fill);
        p.push_str(s);
    }
}

fn truncate_prec(s: &str, fl: Flags) -> &str {
    match fl.prec {
        Some(n) => match s.char_indices().nth(n) {
            Some((i, _)) => &s[..i],
            None => s,
        },
        None => s,
    }
}

fn fmt_s(p: &mut Printer, s: &str, fl: Flags) {
    pad(p, truncate_prec(s, fl), fl);
}

fn fmt_sx(p: &mut Printer, s: &str, fl: Flags, upper: bool) {
    let digits: &[u8] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let bytes = s.as_bytes();
    let n = fl.prec.map_or(bytes.len(), |p| p.min(bytes.len()));
    let mut out = String::new();
    for (k, b) in bytes[..n].iter().enumerate() {
        if fl.space && k > 0 {
            out.push(' ');
        }
        if fl.sharp && (fl.space || k == 0) {
            out.push_str(if upper { "0X" } else { "0x" });
        }
        out.push(digits[usize::from(b >> 4)] as char);
        out.push(digits[usize::from(b & 15)] as char);
    }
    let mut fl = fl;
    fl.zero = false;
    pad(p, &out, fl);
}

fn fmt_q(p: &mut Printer, s: &str, fl: Flags) {
    let s = truncate_prec(s, fl);
    let q = if fl.sharp && can_backquote(s) {
        format!("`{s}`")
    } else {
        quote(s, fl.plus)
    };
    pad(p, &q, fl);
}

fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| c != '`' && c != '\u{FEFF}' && (c == '\t' || !(c < ' ' || c == '\u{7f}')))
}

/// Go's `unicode.IsPrint`, approximated with the standard library's character classes:
/// letters, marks, numbers, punctuation, symbols and U+0020; not controls, other
/// spaces, format characters, private use or unassigned code points.
pub fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF | 0xFFFE | 0xFFFF
        | 0xE0001 | 0xE0020..=0xE007F)
}

/// Go's `strconv.Quote` (or `QuoteToASCII` when `ascii`).
pub fn quote(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"', ascii);
    }
    out.push('"');
    out
}

/// Go's `strconv.QuoteRune`.
pub fn quote_rune(c: char, ascii: bool) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, '\'', ascii);
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, q: char, ascii: bool) {
    if c == q || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if ascii {
        if c.is_ascii() && is_print(c) {
            out.push(c);
            return;
        }
    } else if is_print(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

fn fmt_integer(p: &mut Printer, v: &Value, i: i64, verb: char, fl: Flags) {
    match verb {
        'v' | 'd' => fmt_int_base(p, i, 10, false, verb, fl),
        'b' => fmt_int_base(p, i, 2, false, verb, fl),
        'o' | 'O' => fmt_int_base(p, i, 8, false, verb, fl),
        'x' => fmt_int_base(p, i, 16, false, verb, fl),
        'X' => fmt_int_base(p, i, 16, true, verb, fl),
        'c' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            pad(p, &c.to_string(), fl);
        }
        'q' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let q = if fl.sharp && c != '\'' && c != '`' && is_print(c) && c != '\u{FEFF}' {
                format!("'{c}'")
            } else {
                quote_rune(c, fl.plus)
            };
            pad(p, &q, fl);
        }
        'U' => {
            let mut s = format!("U+{:04X}", i as u64);
            if let Some(pr) = fl.prec {
                let digits = s.len() - 2;
                if pr > digits {
                    s = format!("U+{}{}", "0".repeat(pr - digits), &s[2..]);
                }
            }
            if fl.sharp {
                if let Some(c) = u32::try_from(i).ok().and_then(char::from_u32) {
                    if is_print(c) {
                        s.push_str(&format!(" '{c}'"));
                    }
                }
            }
            let mut fl = fl;
            fl.zero = false;
            pad(p, &s, fl);
        }
        _ => bad_verb(p, v, verb),
    }
}

/// Go's `fmt.fmtInteger`.
fn fmt_int_base(p: &mut Printer, i: i64, base: u32, upper: bool, verb: char, fl: Flags) {
    let negative = i < 0;
    let mut u = i.unsigned_abs();
    let mut prec: i64 = -1;
    let mut zero_pad = false;
    if let Some(pr) = fl.prec {
        prec = pr as i64;
        if pr == 0 && u == 0 {
            let mut fl = fl;
            fl.zero = false;
            pad(p, "", fl);
            return;
        }
    } else if fl.zero && fl.wid.is_some() && !fl.minus {
        prec = fl.wid.unwrap_or(0) as i64;
        if negative || fl.plus || fl.space {
            prec -= 1;
        }
        zero_pad = true;
    }
    let digits: &[u8] = if upper {
        b"0123456789ABCDEFX"
    } else {
        b"0123456789abcdefx"
    };
    let mut num = Vec::new();
    if u == 0 {
        num.push(b'0');
    }
    while u > 0 {
        num.push(digits[(u % u64::from(base)) as usize]);
        u /= u64::from(base);
    }
    while (num.len() as i64) < prec {
        num.push(b'0');
    }
    if fl.sharp {
        match base {
            2 => {
                num.push(b'b');
                num.push(b'0');
            }
            8 if num.last() != Some(&b'0') => num.push(b'0'),
            16 => {
                num.push(digits[16]);
                num.push(b'0');
            }
            _ => {}
        }
    }
    if verb == 'O' {
        num.push(b'o');
        num.push(b'0');
    }
    if negative {
        num.push(b'-');
    } else if fl.plus {
        num.push(b'+');
    } else if fl.space {
        num.push(b' ');
    }
    num.reverse();
    let s = String::from_utf8(num).unwrap_or_default();
    let mut fl = fl;
    if zero_pad || fl.prec.is_some() {
        fl.zero = false;
    }
    pad(p, &s, fl);
}

fn fmt_float_verb(p: &mut Printer, v: &Value, x: f64, verb: char, fl: Flags) {
    let (fmt_char, default_prec) = match verb {
        'v' | 'g' | 'b' | 'x' | 'X' => ('g', -1),
        'G' => ('G', -1),
        'f' | 'F' => ('f', 6),
        'e' => ('e', 6),
        'E' => ('E', 6),
        _ => return bad_verb(p, v, verb),
    };
    let prec = fl.prec.map_or(default_prec, |p| p as i64);
    let mut num = format_float(x, fmt_char, prec);
    // Sign handling as in Go's fmt.fmtFloat.
    let (sign, body) = match num.strip_prefix('-') {
        Some(rest) => ("-", rest.to_string()),
        None => match num.strip_prefix('+') {
            Some(rest) => ("+", rest.to_string()),
            None => ("+", num.clone()),
        },
    };
    let mut sign = sign.to_string();
    if fl.space && sign == "+" && !fl.plus {
        sign = " ".to_string();
    }
    if body == "Inf" || body == "NaN" {
        let mut fl2 = fl;
        fl2.zero = false;
        let s = if body == "NaN" && !fl.space && !fl.plus {
            body
        } else {
            format!("{sign}{body}")
        };
        pad(p, &s, fl2);
        return;
    }
    let mut body = body;
    if fl.sharp {
        body = sharp_float(&body, fmt_char, prec);
    }
    if fl.plus || sign != "+" {
        if fl.zero && fl.wid.is_some_and(|w| w > body.len() + 1) {
            let w = fl.wid.unwrap_or(0);
            p.push_str(&sign);
            p.push_str(&"0".repeat(w - body.len() - 1));
            p.push_str(&body);
            return;
        }
        num = format!("{sign}{body}");
        pad(p, &num, fl);
        return;
    }
    pad(p, &body, fl);
}

/// The `#` flag on floats: keep the decimal point and trailing zeros.
fn sharp_float(num: &str, fmt_char: char, prec: i64) -> String {
    let mut digits: i64 = match fmt_char {
        'g' | 'G' => {
            if prec == -1 {
                6
            } else {
                prec
            }
        }
        _ => 0,
    };
    let (mantissa, tail) = match num.find(['e', 'E']) {
        Some(i) => (&num[..i], &num[i..]),
        None => (num, ""),
    };
    let mut has_point = false;
    let mut saw_nonzero = false;
    for c in mantissa.chars() {
        if c == '.' {
            has_point = true;
        } else {
            if c != '0' {
                saw_nonzero = true;
            }
            if saw_nonzero {
                digits -= 1;
            }
        }
    }
    let mut out = mantissa.to_string();
    if !has_point {
        if mantissa == "0" {
            digits -= 1;
        }
        out.push('.');
    }
    while digits > 0 {
        out.push('0');
        digits -= 1;
    }
    out.push_str(tail);
    out
}

/// Decimal digits of `|x|` (no trailing zeros) and the decimal point position: the
/// value is `0.DIGITS × 10^dp`. Zero has no digits.
fn decimal_digits(x: f64, sig: Option<usize>) -> (Vec<u8>, i64) {
    if x == 0.0 {
        return (Vec::new(), 0);
    }
    let s = match sig {
        None => format!("{:e}", x.abs()),
        Some(n) => format!("{:.*e}", n.saturating_sub(1), x.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits == [b'0'] {
        return (Vec::new(), 0);
    }
    (digits, exp + 1)
}

/// Go's `strconv.FormatFloat(x, fmt, prec, 64)` for `fmt` in `e E f g G`; `prec < 0`
/// means the shortest representation that reads back as `x`.
pub fn format_float(x: f64, fmt_char: char, prec: i64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let neg = x.is_sign_negative();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let shortest = prec < 0;
    match fmt_char {
        'f' => {
            if shortest {
                let (d, dp) = decimal_digits(x, None);
                let p = (d.len() as i64 - dp).max(0) as usize;
                out.push_str(&fmt_f(&d, dp, p));
            } else {
                out.push_str(&format!("{:.*}", prec as usize, x.abs()));
            }
        }
        'e' | 'E' => {
            let (d, dp) = if shortest {
                decimal_digits(x, None)
            } else {
                decimal_digits(x, Some(prec as usize + 1))
            };
            let p = if shortest {
                d.len().saturating_sub(1)
            } else {
                prec as usize
            };
            out.push_str(&fmt_e(&d, dp, p, fmt_char));
        }
        _ => {
            // 'g' / 'G'
            let mut prec = prec;
            if !shortest && prec == 0 {
                prec = 1;
            }
            let (d, dp) = if shortest {
                decimal_digits(x, None)
            } else {
                decimal_digits(x, Some(prec as usize))
            };
            let nd = d.len() as i64;
            if shortest {
                prec = nd;
            }
            let mut eprec = prec;
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            let e_char = if fmt_char == 'G' { 'E' } else { 'e' };
            if nd > 0 && (exp < -4 || exp >= eprec) {
                if prec > nd {
                    prec = nd;
                }
                out.push_str(&fmt_e(&d, dp, (prec - 1).max(0) as usize, e_char));
            } else {
                if prec > dp {
                    prec = nd;
                }
                out.push_str(&fmt_f(&d, dp, (prec - dp).max(0) as usize));
            }
        }
    }
    out
}

fn fmt_e(d: &[u8], dp: i64, prec: usize, e: char) -> String {
    let mut s = String::new();
    s.push(d.first().map_or('0', |&c| c as char));
    if prec > 0 {
        s.push('.');
        for k in 1..=prec {
            s.push(d.get(k).map_or('0', |&c| c as char));
        }
    }
    s.push(e);
    let exp = if d.is_empty() { 0 } else { dp - 1 };
    s.push(if exp < 0 { '-' } else { '+' });
    let a = exp.abs();
    if a < 10 {
        s.push('0');
    }
    s.push_str(&a.to_string());
    s
}

fn fmt_f(d: &[u8], dp: i64, prec: usize) -> String {
    let mut s = String::new();
    if dp > 0 {
        let m = (dp as usize).min(d.len());
        for &c in &d[..m] {
            s.push(c as char);
        }
        for _ in m..dp as usize {
            s.push('0');
        }
    } else {
        s.push('0');
    }
    if prec > 0 {
        s.push('.');
        for k in 1..=prec as i64 {
            let j = dp + k - 1;
            let c = if j >= 0 && (j as usize) < d.len() {
                d[j as usize] as char
            } else {
                '0'
            };
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf(format: &str, args: &[Value]) -> String {
        let mut p = Printer::new(1 << 20);
        sprintf(&mut p, format, args);
        p.finish()
    }

    // Expected strings below are what Go 1.19's fmt.Sprintf prints.
    #[test]
    fn printf_verbs_match_go() {
        let s = Value::str;
        assert_eq!(
            pf("%s|%v|%q", &[s("a"), s("b"), s("c\"d")]),
            "a|b|\"c\\\"d\""
        );
        assert_eq!(
            pf(
                "%d|%5d|%-5d|%05d|%+d|%x|%X|%#x|%o|%b",
                &[
                    Value::Int(42),
                    Value::Int(42),
                    Value::Int(42),
                    Value::Int(-42),
                    Value::Int(42),
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(8),
                    Value::Int(5)
                ]
            ),
            "42|   42|42   |-0042|+42|ff|FF|0xff|10|101"
        );
        assert_eq!(pf("%d", &[s("x")]), "%!d(string=x)");
        assert_eq!(pf("%s", &[Value::Int(5)]), "%!s(int=5)");
        assert_eq!(pf("%s %s", &[s("a")]), "a %!s(MISSING)");
        assert_eq!(pf("%s", &[s("a"), Value::Int(1)]), "a%!(EXTRA int=1)");
        assert_eq!(pf("%s", &[Value::Nil]), "%!s(<nil>)");
        assert_eq!(pf("%v", &[Value::Invalid]), "<nil>");
        assert_eq!(
            pf("%t|%v", &[Value::Bool(true), Value::Bool(false)]),
            "true|false"
        );
        assert_eq!(pf("%", &[]), "%!(NOVERB)");
        assert_eq!(pf("%[2]s %[1]s", &[s("a"), s("b")]), "b a");
        assert_eq!(
            pf(
                "%*d|%.*f",
                &[
                    Value::Int(4),
                    Value::Int(7),
                    Value::Int(2),
                    Value::Float(3.14158)
                ]
            ),
            "   7|3.14"
        );
        assert_eq!(
            pf(
                "%.2s|%5.1s|%x|% x",
                &[s("hello"), s("hi"), s("hi"), s("hi")]
            ),
            "he|    h|6869|68 69"
        );
        assert_eq!(
            pf(
                "%c|%q|%U",
                &[Value::Int(65), Value::Int(65), Value::Int(0x1F600)]
            ),
            "A|'A'|U+1F600"
        );
        assert_eq!(
            pf("%T %T %T", &[s("a"), Value::Int64(1), Value::Nil]),
            "string int64 <nil>"
        );
        assert_eq!(pf("100%%", &[]), "100%");
    }

    #[test]
    fn floats_match_go() {
        let f = |x: f64| to_string(&Value::Float(x), 1000);
        assert_eq!(f(1.0), "1");
        assert_eq!(f(1.5), "1.5");
        assert_eq!(f(1e6), "1e+06");
        assert_eq!(f(123456.0), "123456");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(0.00001), "1e-05");
        assert_eq!(f(-0.0), "-0");
        assert_eq!(f(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(
            pf(
                "%f|%.2f|%e|%.3e|%g|%.3g|%G",
                &[
                    Value::Float(3.14158),
                    Value::Float(2.005),
                    Value::Float(1234.5678),
                    Value::Float(0.000123),
                    Value::Float(100000.0),
                    Value::Float(1000.0),
                    Value::Float(1e-7)
                ]
            ),
            "3.141580|2.00|1.234568e+03|1.230e-04|100000|1e+03|1E-07"
        );
        assert_eq!(
            pf(
                "%8.3f|%-8.2f|%08.3f|%+.1f",
                &[
                    Value::Float(3.14158),
                    Value::Float(2.5),
                    Value::Float(-3.14158),
                    Value::Float(2.0)
                ]
            ),
            "   3.142|2.50    |-003.142|+2.0"
        );
    }

    #[test]
    fn sprint_spaces_between_non_strings() {
        let mut p = Printer::new(100);
        sprint(
            &mut p,
            &[
                Value::Int(1),
                Value::Int(2),
                Value::str("a"),
                Value::Int(3),
                Value::str("b"),
                Value::str("c"),
            ],
        );
        assert_eq!(p.finish(), "1 2a3bc");
        let mut p = Printer::new(100);
        sprintln(&mut p, &[Value::str("a"), Value::Int(1)]);
        assert_eq!(p.finish(), "a 1\n");
    }

    #[test]
    fn quote_matches_strconv() {
        assert_eq!(
            quote("a\tb\n\u{0}é\u{a0}", false),
            "\"a\\tb\\n\\x00é\\u00a0\""
        );
        assert_eq!(quote("é", true), "\"\\u00e9\"");
    }
}
