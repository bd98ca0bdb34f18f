//! sprig's numeric functions (`numeric.go`) and the spf13/cast conversions they use:
//! a string converts with Go's base prefixes (`"0x1f"` is 31, `"010"` is 8, `"08"` is
//! not a number and gives 0), trailing `.000` is ignored, floats truncate, bools are
//! 0 or 1, anything unconvertible is 0.
//!
//! `addf`, `subf`, `mulf` compute in exact decimal as sprig's shopspring/decimal does
//! (`addf 0.1 0.2` is `0.3`), falling back to binary floats when a result does not fit.

use super::{i, t};
use crate::template::fmt::format_float;
use crate::template::funcs::{Func, FuncMap};
use crate::template::value::Value;

pub(super) fn register(m: &mut FuncMap) {
    let any = t::any;
    m.insert(
        "atoi",
        Func::new(vec![t::string()], |_, a| {
            Ok(Value::Int(a[0].as_str().and_then(atoi).unwrap_or(0)))
        }),
    );
    m.insert(
        "int64",
        Func::new(vec![any()], |_, a| Ok(Value::Int64(to_int64(&a[0])))),
    );
    m.insert(
        "int",
        Func::new(vec![any()], |_, a| Ok(Value::Int(to_int64(&a[0])))),
    );
    m.insert(
        "float64",
        Func::new(vec![any()], |_, a| Ok(Value::Float(to_float64(&a[0])))),
    );
    m.insert(
        "toDecimal",
        Func::new(vec![any()], |_, a| {
            let s = super::strval(&a[0]);
            Ok(Value::Int64(parse_int_base(&s, 8).unwrap_or(0)))
        }),
    );
    m.insert("seq", Func::variadic(vec![], t::int(), seq));
    m.insert(
        "add1",
        Func::new(vec![any()], |_, a| {
            Ok(Value::Int64(to_int64(&a[0]).wrapping_add(1)))
        }),
    );
    m.insert(
        "add",
        Func::variadic(vec![], any(), |_, a| {
            Ok(Value::Int64(
                a.iter().fold(0i64, |s, x| s.wrapping_add(to_int64(x))),
            ))
        }),
    );
    m.insert(
        "sub",
        Func::new(vec![any(), any()], |_, a| {
            Ok(Value::Int64(to_int64(&a[0]).wrapping_sub(to_int64(&a[1]))))
        }),
    );
    m.insert(
        "div",
        Func::new(vec![any(), any()], |_, a| {
            let (x, y) = (to_int64(&a[0]), to_int64(&a[1]));
            if y == 0 {
                return Err("runtime error: integer divide by zero".into());
            }
            Ok(Value::Int64(x.wrapping_div(y)))
        }),
    );
    m.insert(
        "mod",
        Func::new(vec![any(), any()], |_, a| {
            let (x, y) = (to_int64(&a[0]), to_int64(&a[1]));
            if y == 0 {
                return Err("runtime error: integer divide by zero".into());
            }
            Ok(Value::Int64(x.wrapping_rem(y)))
        }),
    );
    m.insert(
        "mul",
        Func::variadic(vec![any()], any(), |_, a| {
            Ok(Value::Int64(
                a[1..]
                    .iter()
                    .fold(to_int64(&a[0]), |s, x| s.wrapping_mul(to_int64(x))),
            ))
        }),
    );
    m.insert(
        "randInt",
        Func::new(vec![t::int(), t::int()], |_, a| {
            let (lo, hi) = (i(&a[0]), i(&a[1]));
            if hi <= lo {
                return Err("invalid argument to Intn".into());
            }
            let span = (hi - lo) as u64;
            let r = super::encoding::random_u64() % span;
            Ok(Value::Int(lo + r as i64))
        }),
    );
    m.insert(
        "add1f",
        Func::new(vec![any()], |_, a| {
            Ok(Value::Float(decimal_op(to_float64(&a[0]), &[1.0], Op::Add)))
        }),
    );
    m.insert(
        "addf",
        Func::variadic(vec![], any(), |_, a| {
            let xs: Vec<f64> = a.iter().map(to_float64).collect();
            Ok(Value::Float(decimal_op(0.0, &xs, Op::Add)))
        }),
    );
    m.insert(
        "subf",
        Func::variadic(vec![any()], any(), |_, a| float_op(a, Op::Sub)),
    );
    m.insert(
        "mulf",
        Func::variadic(vec![any()], any(), |_, a| float_op(a, Op::Mul)),
    );
    m.insert(
        "divf",
        Func::variadic(vec![any()], any(), |_, a| float_op(a, Op::Div)),
    );
    for name in ["biggest", "max"] {
        m.insert(
            name,
            Func::variadic(vec![any()], any(), |_, a| {
                Ok(Value::Int64(a.iter().map(to_int64).max().unwrap_or(0)))
            }),
        );
    }
    m.insert(
        "min",
        Func::variadic(vec![any()], any(), |_, a| {
            Ok(Value::Int64(a.iter().map(to_int64).min().unwrap_or(0)))
        }),
    );
    m.insert(
        "maxf",
        Func::variadic(vec![any()], any(), |_, a| {
            Ok(Value::Float(
                a[1..]
                    .iter()
                    .map(to_float64)
                    .fold(to_float64(&a[0]), go_max),
            ))
        }),
    );
    m.insert(
        "minf",
        Func::variadic(vec![any()], any(), |_, a| {
            Ok(Value::Float(
                a[1..]
                    .iter()
                    .map(to_float64)
                    .fold(to_float64(&a[0]), go_min),
            ))
        }),
    );
    m.insert(
        "ceil",
        Func::new(vec![any()], |_, a| {
            Ok(Value::Float(to_float64(&a[0]).ceil()))
        }),
    );
    m.insert(
        "floor",
        Func::new(vec![any()], |_, a| {
            Ok(Value::Float(to_float64(&a[0]).floor()))
        }),
    );
    m.insert(
        "round",
        Func::variadic(vec![any(), t::int()], t::float(), |_, a| {
            let round_on = a
                .get(2)
                .and_then(|v| {
                    if let Value::Float(f) = v {
                        Some(*f)
                    } else {
                        None
                    }
                })
                .unwrap_or(0.5);
            let val = to_float64(&a[0]);
            let pow = 10f64.powf(i(&a[1]) as f64);
            let digit = pow * val;
            let frac = digit - digit.trunc();
            let r = if frac >= round_on {
                digit.ceil()
            } else {
                digit.floor()
            };
            Ok(Value::Float(r / pow))
        }),
    );
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Go's `strconv.Atoi`.
fn atoi(s: &str) -> Option<i64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `strconv.ParseInt(s, base, 64)` with base 0 meaning Go's prefixes.
fn parse_int_base(s: &str, base: u32) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (base, digits) = if base == 0 {
        let b = body.as_bytes();
        if b.len() >= 2 && b[0] == b'0' {
            match b[1] {
                b'x' | b'X' => (16, &body[2..]),
                b'o' | b'O' => (8, &body[2..]),
                b'b' | b'B' => (2, &body[2..]),
                _ => (8, &body[1..]),
            }
        } else {
            (10, body)
        }
    } else {
        (base, body)
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return if body == "0" { Some(0) } else { None };
    }
    let clean = digits.replace('_', "");
    if !clean.chars().all(|c| c.is_digit(base)) {
        return None;
    }
    let u = i128::from_str_radix(&clean, base).ok()?;
    let v = if neg { -u } else { u };
    i64::try_from(v).ok()
}

fn trim_zero_decimal(s: &str) -> &str {
    let b = s.as_bytes();
    let mut found_zero = false;
    for k in (1..=b.len()).rev() {
        match b[k - 1] {
            b'.' => {
                if found_zero {
                    return &s[..k - 1];
                }
            }
            b'0' => found_zero = true,
            _ => return s,
        }
    }
    s
}

/// spf13/cast `ToInt64` (errors give 0).
pub(crate) fn to_int64(v: &Value) -> i64 {
    match v {
        Value::Int(x) | Value::Int64(x) => *x,
        Value::Float(f) => *f as i64,
        Value::Str(s) => parse_int_base(trim_zero_decimal(s), 0).unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

/// spf13/cast `ToFloat64` (errors give 0).
pub(crate) fn to_float64(v: &Value) -> f64 {
    match v {
        Value::Int(x) | Value::Int64(x) => *x as f64,
        Value::Float(f) => *f,
        Value::Str(s) => s
            .parse::<f64>()
            .ok()
            .filter(|_| !s.contains(['_', 'x', 'X']))
            .unwrap_or(0.0),
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

fn seq(_: &mut crate::template::funcs::Ctx<'_>, a: &[Value]) -> crate::template::funcs::FuncResult {
    let p: Vec<i64> = a.iter().map(i).collect();
    let (start, end, step) = match p.len() {
        1 => (1, p[0], if p[0] < 1 { -1 } else { 1 }),
        2 => (p[0], p[1], if p[1] < p[0] { -1 } else { 1 }),
        3 => {
            if p[2] < p[0] && p[1] > 0 {
                return Ok(Value::str(""));
            }
            (p[0], p[2], p[1])
        }
        _ => return Ok(Value::str("")),
    };
    let inc = if end < start { -1 } else { 1 };
    let stop = end + inc;
    let mut out = Vec::new();
    let mut x = start;
    let limit = 1 << 20;
    if stop < start {
        if step < 0 {
            while x > stop && out.len() < limit {
                out.push(x.to_string());
                x += step;
            }
        }
    } else if step > 0 {
        while x < stop && out.len() < limit {
            out.push(x.to_string());
            x += step;
        }
    }
    if out.len() >= limit {
        return Err(format!("sequence longer than {limit} elements"));
    }
    Ok(Value::string(out.join(" ")))
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

fn float_op(a: &[Value], op: Op) -> crate::template::funcs::FuncResult {
    let rest: Vec<f64> = a[1..].iter().map(to_float64).collect();
    let first = to_float64(&a[0]);
    if let Op::Div = op {
        if rest.contains(&0.0) {
            return Err("decimal division by 0".into());
        }
    }
    Ok(Value::Float(decimal_op(first, &rest, op)))
}

/// An exact decimal `mantissa × 10^exp`.
#[derive(Clone, Copy)]
struct Dec {
    m: i128,
    e: i32,
}

impl Dec {
    /// shopspring's `NewFromFloat`: the shortest decimal that reads back as `f`.
    fn from_f64(f: f64) -> Option<Dec> {
        if !f.is_finite() {
            return None;
        }
        let s = format_float(f, 'e', -1);
        let (mant, exp) = s.split_once('e')?;
        let exp: i32 = exp.parse().ok()?;
        let neg = mant.starts_with('-');
        let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
        let frac = digits.len() as i32 - 1;
        let m: i128 = digits.parse().ok()?;
        Some(Dec {
            m: if neg { -m } else { m },
            e: exp - frac,
        })
    }

    fn align(a: Dec, b: Dec) -> Option<(i128, i128, i32)> {
        let e = a.e.min(b.e);
        let sa = a.m.checked_mul(10i128.checked_pow((a.e - e) as u32)?)?;
        let sb = b.m.checked_mul(10i128.checked_pow((b.e - e) as u32)?)?;
        Some((sa, sb, e))
    }

    fn to_f64(self) -> f64 {
        format!("{}e{}", self.m, self.e).parse().unwrap_or(f64::NAN)
    }
}

fn decimal_op(first: f64, rest: &[f64], op: Op) -> f64 {
    let exact = (|| {
        let mut acc = Dec::from_f64(first)?;
        for &x in rest {
            let d = Dec::from_f64(x)?;
            acc = match op {
                Op::Add => {
                    let (a, b, e) = Dec::align(acc, d)?;
                    Dec {
                        m: a.checked_add(b)?,
                        e,
                    }
                }
                Op::Sub => {
                    let (a, b, e) = Dec::align(acc, d)?;
                    Dec {
                        m: a.checked_sub(b)?,
                        e,
                    }
                }
                Op::Mul => Dec {
                    m: acc.m.checked_mul(d.m)?,
                    e: acc.e + d.e,
                },
                Op::Div => {
                    // shopspring rounds quotients to 16 decimal places.
                    let q = acc.to_f64() / d.to_f64();
                    let s = format!("{q:.16}");
                    Dec::from_f64(s.parse::<f64>().ok()?)?
                }
            };
        }
        Some(acc.to_f64())
    })();
    exact.unwrap_or_else(|| {
        rest.iter().fold(first, |a, &x| match op {
            Op::Add => a + x,
            Op::Sub => a - x,
            Op::Mul => a * x,
            Op::Div => a / x,
        })
    })
}
