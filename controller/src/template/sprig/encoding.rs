//! sprig's encoding, hashing and random functions: `b64enc b64dec b32enc b32dec
//! sha1sum sha256sum adler32sum randAlphaNum randAlpha randAscii randNumeric randBytes
//! shuffle uuidv4`.
//!
//! Decoding failures return Go's error text as the result, as sprig does.

use base64::Engine as _;
use sha1::Digest as _;

use super::{i, s, t};
use crate::template::funcs::{Ctx, Func, FuncMap, FuncResult};
use crate::template::value::Value;

pub(super) fn register(m: &mut FuncMap) {
    let st = t::string;
    m.insert(
        "b64enc",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(
                base64::engine::general_purpose::STANDARD.encode(s(&a[0])),
            ))
        }),
    );
    m.insert(
        "b64dec",
        Func::new(vec![st()], |_, a| Ok(Value::string(b64dec(s(&a[0]))))),
    );
    m.insert(
        "b32enc",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(b32enc(s(&a[0]).as_bytes())))
        }),
    );
    m.insert(
        "b32dec",
        Func::new(vec![st()], |_, a| Ok(Value::string(b32dec(s(&a[0]))))),
    );
    m.insert(
        "sha1sum",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(hex(&sha1::Sha1::digest(s(&a[0]).as_bytes()))))
        }),
    );
    m.insert(
        "sha256sum",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(hex(&sha2::Sha256::digest(
                s(&a[0]).as_bytes(),
            ))))
        }),
    );
    m.insert(
        "adler32sum",
        Func::new(vec![st()], |_, a| {
            Ok(Value::string(adler32(s(&a[0]).as_bytes()).to_string()))
        }),
    );
    m.insert(
        "randAlphaNum",
        Func::new(vec![t::int()], |c, a| {
            rand_from(
                c,
                i(&a[0]),
                "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            )
        }),
    );
    m.insert(
        "randAlpha",
        Func::new(vec![t::int()], |c, a| {
            rand_from(
                c,
                i(&a[0]),
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            )
        }),
    );
    m.insert(
        "randNumeric",
        Func::new(vec![t::int()], |c, a| rand_from(c, i(&a[0]), "0123456789")),
    );
    m.insert(
        "randAscii",
        Func::new(vec![t::int()], |c, a| {
            let printable: String = (32u8..127).map(char::from).collect();
            rand_from(c, i(&a[0]), &printable)
        }),
    );
    m.insert(
        "randBytes",
        Func::new(vec![t::int()], |c, a| {
            let n = i(&a[0]).max(0) as usize;
            c.check_size(n)?;
            let mut buf = vec![0u8; n];
            fill_random(&mut buf);
            Ok(Value::string(
                base64::engine::general_purpose::STANDARD.encode(buf),
            ))
        }),
    );
    m.insert(
        "shuffle",
        Func::new(vec![st()], |_, a| {
            let mut chars: Vec<char> = s(&a[0]).chars().collect();
            for k in (1..chars.len()).rev() {
                let j = (random_u64() % (k as u64 + 1)) as usize;
                chars.swap(k, j);
            }
            Ok(Value::string(chars.into_iter().collect()))
        }),
    );
    m.insert(
        "uuidv4",
        Func::new(vec![], |_, _| {
            let mut b = [0u8; 16];
            fill_random(&mut b);
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h = hex(&b);
            Ok(Value::string(format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )))
        }),
    );
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn b64dec(x: &str) -> String {
    let clean: String = x.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    match base64::engine::general_purpose::STANDARD.decode(clean.as_bytes()) {
        Ok(d) => String::from_utf8_lossy(&d).into_owned(),
        Err(base64::DecodeError::InvalidByte(off, _))
        | Err(base64::DecodeError::InvalidLastSymbol(off, _)) => {
            format!("illegal base64 data at input byte {off}")
        }
        Err(_) => format!(
            "illegal base64 data at input byte {}",
            clean.len().saturating_sub(clean.len() % 4).min(clean.len())
        ),
    }
}

const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn b32enc(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = buf.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let chars = match chunk.len() {
            1 => 2,
            2 => 4,
            3 => 5,
            4 => 7,
            _ => 8,
        };
        for k in 0..8 {
            if k < chars {
                out.push(B32[((n >> (35 - 5 * k)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b32dec(x: &str) -> String {
    let clean: Vec<u8> = x.bytes().filter(|c| *c != b'\r' && *c != b'\n').collect();
    if !clean.len().is_multiple_of(8) {
        return format!("illegal base32 data at input byte {}", clean.len() / 8 * 8);
    }
    let mut out = Vec::new();
    for (ci, chunk) in clean.chunks(8).enumerate() {
        let mut n: u64 = 0;
        let mut count = 0;
        for (k, &c) in chunk.iter().enumerate() {
            if c == b'=' {
                if chunk[k..].iter().any(|&p| p != b'=') {
                    return format!("illegal base32 data at input byte {}", ci * 8 + k);
                }
                break;
            }
            let Some(v) = B32.iter().position(|&b| b == c) else {
                return format!("illegal base32 data at input byte {}", ci * 8 + k);
            };
            n = (n << 5) | v as u64;
            count += 1;
        }
        n <<= 5 * (8 - count);
        let bytes = match count {
            8 => 5,
            7 => 4,
            5 => 3,
            4 => 2,
            2 => 1,
            0 => 0,
            _ => return format!("illegal base32 data at input byte {}", ci * 8 + count),
        };
        // n holds 40 bits, most significant byte first.
        out.extend((0..bytes).map(|k| (n >> (32 - 8 * k)) as u8));
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn fill_random(buf: &mut [u8]) {
    // A failing system RNG leaves zeros; these values are never secrets of ours.
    let _ = getrandom::getrandom(buf);
}

pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    fill_random(&mut b);
    u64::from_le_bytes(b)
}

fn rand_from(c: &mut Ctx<'_>, n: i64, alphabet: &str) -> FuncResult {
    if n < 0 {
        return Err("count must be non-negative".into());
    }
    c.check_size(n as usize)?;
    let chars: Vec<char> = alphabet.chars().collect();
    let out: String = (0..n)
        .map(|_| chars[(random_u64() % chars.len() as u64) as usize])
        .collect();
    Ok(Value::string(out))
}
