//! Functions callable from templates: their Go signatures, the function map, and the
//! context a call runs in.
//!
//! Go checks and converts arguments against a function's parameter types before the
//! call (`wrong number of args`, `wrong type for value; expected string; got int`,
//! untyped constants converted to the parameter's type), so every function here
//! declares its parameters as [`GoType`]s and the executor does the same checks.
//! A function returns a value or an error message; the executor wraps the message as
//! Go does: `error calling NAME: MESSAGE`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::value::{GoType, MapData, MapRef, SliceData, Value};
use super::Limits;

/// What a function returns: a value, or the message of its error.
pub type FuncResult = Result<Value, String>;

/// A native function body.
pub type NativeFn = fn(&mut Ctx<'_>, &[Value]) -> FuncResult;

/// A function body that captures state.
pub type CustomFn = Arc<dyn Fn(&mut Ctx<'_>, &[Value]) -> FuncResult + Send + Sync>;

#[derive(Clone)]
pub(crate) enum Imp {
    Native(NativeFn),
    Custom(CustomFn),
    /// A sprig function KubeBlocks offers that this engine does not implement: the
    /// name parses, a call fails with a clear error.
    Unsupported,
}

/// A template function: its parameter types and body.
#[derive(Clone)]
pub struct Func {
    pub(crate) params: Vec<GoType>,
    pub(crate) variadic: Option<GoType>,
    pub(crate) imp: Imp,
}

impl std::fmt::Debug for Func {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Func")
            .field("params", &self.params)
            .field("variadic", &self.variadic)
            .finish()
    }
}

impl Func {
    /// A function with fixed parameters.
    pub fn new(params: Vec<GoType>, body: NativeFn) -> Func {
        Func {
            params,
            variadic: None,
            imp: Imp::Native(body),
        }
    }

    /// A function whose last parameter is variadic (`...T`).
    pub fn variadic(params: Vec<GoType>, rest: GoType, body: NativeFn) -> Func {
        Func {
            params,
            variadic: Some(rest),
            imp: Imp::Native(body),
        }
    }

    /// A function backed by a closure.
    pub fn custom(params: Vec<GoType>, variadic: Option<GoType>, body: CustomFn) -> Func {
        Func {
            params,
            variadic,
            imp: Imp::Custom(body),
        }
    }

    pub(crate) fn unsupported() -> Func {
        Func {
            params: Vec::new(),
            variadic: Some(GoType::Interface),
            imp: Imp::Unsupported,
        }
    }
}

/// Named functions available to a template (Go's `FuncMap`), in addition to the
/// builtins. A function here shadows a builtin of the same name, as in Go.
#[derive(Clone, Debug, Default)]
pub struct FuncMap {
    pub(crate) funcs: BTreeMap<String, Func>,
}

impl FuncMap {
    /// An empty map.
    pub fn new() -> FuncMap {
        FuncMap::default()
    }

    /// Add or replace a function.
    pub fn insert(&mut self, name: &str, f: Func) {
        self.funcs.insert(name.to_string(), f);
    }

    /// Add all functions of `other`, replacing those of the same name.
    pub fn extend(&mut self, other: &FuncMap) {
        for (k, v) in &other.funcs {
            self.funcs.insert(k.clone(), v.clone());
        }
    }

    /// Whether `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.funcs.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Func> {
        self.funcs.get(name)
    }

    /// Names of the functions that parse but fail when called because this engine
    /// does not implement them.
    pub fn unsupported(&self) -> Vec<&str> {
        self.funcs
            .iter()
            .filter(|(_, f)| matches!(f.imp, Imp::Unsupported))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// The maps one execution created. Go maps are references and sprig's `set` can make a
/// map hold itself; clearing every map when the execution ends breaks such cycles so
/// they are freed.
#[derive(Default)]
pub(crate) struct Heap {
    maps: Vec<Weak<RefCell<MapData>>>,
}

impl Heap {
    pub(crate) fn new_map(&mut self, data: MapData) -> MapRef {
        let m = MapRef(Rc::new(RefCell::new(data)));
        self.maps.push(Rc::downgrade(&m.0));
        m
    }

    /// Copy input data into this heap, so the execution never mutates the caller's
    /// values.
    pub(crate) fn adopt(&mut self, v: &Value, depth: usize) -> Value {
        if depth > 64 {
            return Value::Invalid;
        }
        match v {
            Value::Slice(s) => Value::Slice(Rc::new(SliceData {
                elem: s.elem.clone(),
                items: s.items.iter().map(|x| self.adopt(x, depth + 1)).collect(),
                nil: s.nil,
            })),
            Value::Map(m) => {
                let (elem, entries, nil) = {
                    let b = m.borrow();
                    (b.elem.clone(), b.entries.clone(), b.nil)
                };
                let entries = entries
                    .iter()
                    .map(|(k, x)| (k.clone(), self.adopt(x, depth + 1)))
                    .collect();
                Value::Map(self.new_map(MapData { elem, entries, nil }))
            }
            Value::Struct(s) => Value::Struct(Rc::new(super::value::StructData {
                type_name: s.type_name.clone(),
                fields: s
                    .fields
                    .iter()
                    .map(|(n, x)| (n.clone(), self.adopt(x, depth + 1)))
                    .collect(),
            })),
            other => other.clone(),
        }
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        for w in &self.maps {
            if let Some(m) = w.upgrade() {
                if let Ok(mut b) = m.try_borrow_mut() {
                    b.entries.clear();
                }
            }
        }
    }
}

/// The context of one function call.
pub struct Ctx<'a> {
    pub(crate) heap: &'a mut Heap,
    pub(crate) limits: &'a Limits,
}

impl Ctx<'_> {
    /// A new `map[string]T`.
    pub fn new_map(&mut self, elem: GoType, entries: BTreeMap<String, Value>) -> Value {
        Value::Map(self.heap.new_map(MapData {
            elem,
            entries,
            nil: false,
        }))
    }

    /// Fail unless a result of `n` bytes or elements fits the limits.
    pub fn check_size(&self, n: usize) -> Result<(), String> {
        if n > self.limits.max_value_bytes {
            return Err(format!(
                "result of {n} bytes or elements exceeds the limit of {}",
                self.limits.max_value_bytes
            ));
        }
        Ok(())
    }

    /// The largest value a function may build, in bytes or elements.
    pub fn max_value(&self) -> usize {
        self.limits.max_value_bytes
    }
}
