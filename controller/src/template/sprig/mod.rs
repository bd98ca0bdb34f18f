//! The sprig function library (Masterminds/sprig v3.2.3, the version KubeBlocks builds
//! with), as `sprig.TxtFuncMap()` offers it.
//!
//! Every name of sprig's map is registered, with sprig's Go signature, so a template
//! parses exactly when it parses in KubeBlocks. Functions whose results depend on the
//! clock, on key generation or on the network, and a few text-wrapping helpers, are
//! registered but not implemented ([`NOT_IMPLEMENTED`]): calling one is an execution
//! error naming it. Functions that panic in Go (e.g. `first` of a non-list) report the
//! panic as the call's error, as Go's template engine does.
//!
//! sprig's `keys`, `values` and map-to-list functions follow Go's random map order;
//! here they follow sorted key order (one of the orders Go may produce).

mod defaults;
mod dicts;
mod encoding;
mod lists;
mod numeric;
mod paths;
mod reflect;
mod regex;
mod strings;

use super::funcs::{Func, FuncMap};
use super::value::{GoType, Value};

/// sprig functions this engine registers but does not implement.
pub const NOT_IMPLEMENTED: &[&str] = &[
    // Clock.
    "ago",
    "date",
    "date_in_zone",
    "date_modify",
    "dateInZone",
    "dateModify",
    "duration",
    "durationRound",
    "htmlDate",
    "htmlDateInZone",
    "must_date_modify",
    "mustDateModify",
    "mustToDate",
    "now",
    "toDate",
    "unixEpoch",
    // Keys and certificates.
    "bcrypt",
    "htpasswd",
    "genPrivateKey",
    "derivePassword",
    "buildCustomCert",
    "genCA",
    "genCAWithKey",
    "genSelfSignedCert",
    "genSelfSignedCertWithKey",
    "genSignedCert",
    "genSignedCertWithKey",
    "encryptAES",
    "decryptAES",
    // Network.
    "getHostByName",
    // Versions, URLs, word wrapping and case conversion.
    "semver",
    "semverCompare",
    "urlParse",
    "urlJoin",
    "wrap",
    "wrapWith",
    "snakecase",
    "camelcase",
    "kebabcase",
];

pub(crate) fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub(crate) fn i(v: &Value) -> i64 {
    v.as_int().unwrap_or(0)
}

/// Go's `fmt.Sprintf("%v", v)` (sprig's `strval` for non-strings).
pub(crate) fn strval(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        v => super::fmt::to_string(v, 1 << 20),
    }
}

/// Types used in signatures.
pub(crate) mod t {
    use super::GoType;
    pub fn any() -> GoType {
        GoType::Interface
    }
    pub fn string() -> GoType {
        GoType::String
    }
    pub fn int() -> GoType {
        GoType::Int
    }
    pub fn boolean() -> GoType {
        GoType::Bool
    }
    pub fn float() -> GoType {
        GoType::Float64
    }
    pub fn map() -> GoType {
        GoType::any_map()
    }
}

/// `sprig.TxtFuncMap()`: every sprig function, by name.
pub fn txt_func_map() -> FuncMap {
    let mut m = FuncMap::new();
    strings::register(&mut m);
    lists::register(&mut m);
    dicts::register(&mut m);
    defaults::register(&mut m);
    numeric::register(&mut m);
    encoding::register(&mut m);
    regex::register(&mut m);
    reflect::register(&mut m);
    paths::register(&mut m);
    m.insert("hello", Func::new(vec![], |_, _| Ok(Value::str("Hello!"))));
    m.insert(
        "fail",
        Func::new(vec![t::string()], |_, a| Err(s(&a[0]).to_string())),
    );
    for name in NOT_IMPLEMENTED {
        m.insert(name, Func::unsupported());
    }
    m
}
