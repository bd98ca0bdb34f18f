//! sprig's reflection functions (`reflect.go`): `typeOf typeIs typeIsLike kindOf
//! kindIs deepEqual`, with Go's type and kind names.

use super::{s, t};
use crate::template::funcs::{Func, FuncMap};
use crate::template::value::Value;

fn type_of(v: &Value) -> String {
    match v {
        Value::Invalid | Value::Nil => "<nil>".into(),
        v => v.go_type().map(|t| t.to_string()).unwrap_or_default(),
    }
}

pub(super) fn register(m: &mut FuncMap) {
    m.insert(
        "typeOf",
        Func::new(vec![t::any()], |_, a| Ok(Value::string(type_of(&a[0])))),
    );
    m.insert(
        "typeIs",
        Func::new(vec![t::string(), t::any()], |_, a| {
            Ok(Value::Bool(s(&a[0]) == type_of(&a[1])))
        }),
    );
    m.insert(
        "typeIsLike",
        Func::new(vec![t::string(), t::any()], |_, a| {
            let ty = type_of(&a[1]);
            Ok(Value::Bool(
                s(&a[0]) == ty || format!("*{}", s(&a[0])) == ty,
            ))
        }),
    );
    m.insert(
        "kindOf",
        Func::new(vec![t::any()], |_, a| {
            Ok(Value::str(super::lists::kind(&a[0])))
        }),
    );
    m.insert(
        "kindIs",
        Func::new(vec![t::string(), t::any()], |_, a| {
            Ok(Value::Bool(s(&a[0]) == super::lists::kind(&a[1])))
        }),
    );
    m.insert(
        "deepEqual",
        Func::new(vec![t::any(), t::any()], |_, a| {
            Ok(Value::Bool(a[0].deep_equal(&a[1])))
        }),
    );
}
