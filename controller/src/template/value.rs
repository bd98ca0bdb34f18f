//! The values a template sees: a model of the Go values `text/template` reflects over.
//!
//! Go's template engine works on `reflect.Value`s, and what a template prints or which
//! error it reports depends on the *Go type* of a value, not only on its contents:
//! `index` on a `map[string]string` yields `""` for a missing key while on a
//! `map[string]interface {}` it yields `<no value>`; `hasKey` rejects a
//! `map[string]string`; `toJson` writes `null` for a nil slice and `[]` for an empty one.
//! So every [`Value`] carries the Go type it stands for ([`GoType`]).
//!
//! Invariants:
//! - [`Value::Invalid`] is Go's zero `reflect.Value` (a missing map entry, an unset
//!   variable's absent data); [`Value::Nil`] is a nil `interface {}` held in a
//!   container (an element of `[]interface {}` or `map[string]interface {}`). The two
//!   print differently (`<no value>` against `<nil>`), as in Go.
//! - Maps have reference semantics (sprig's `set` mutates the map every holder sees), so
//!   [`MapRef`] is shared and mutable. Maps are only created through an execution's
//!   [`Heap`](crate::template::exec), which clears them when the execution ends so a map
//!   that holds itself cannot leak.
//! - Map keys are strings (the only key type templates over JSON-like data and the
//!   KubeBlocks render context produce); iteration is in sorted byte order, which is
//!   the order Go's `range` and `fmt` use for string keys.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

/// The Go type of a value or of a function parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoType {
    /// `bool`
    Bool,
    /// `int` (64-bit, as on every platform KubeBlocks runs on)
    Int,
    /// `int64`
    Int64,
    /// `float64`
    Float64,
    /// `string`
    String,
    /// `interface {}`: any value.
    Interface,
    /// `[]T`
    Slice(Box<GoType>),
    /// `map[string]T`
    Map(Box<GoType>),
    /// A named struct type, e.g. `v1.SecretReference`.
    Struct(Arc<str>),
    /// `reflect.Value`: the parameter type of Go's comparison and logic builtins, which
    /// accept anything, including no value at all.
    ReflectValue,
}

impl GoType {
    /// `[]interface {}`
    pub fn any_slice() -> GoType {
        GoType::Slice(Box::new(GoType::Interface))
    }

    /// `map[string]interface {}`
    pub fn any_map() -> GoType {
        GoType::Map(Box::new(GoType::Interface))
    }

    /// `[]string`
    pub fn string_slice() -> GoType {
        GoType::Slice(Box::new(GoType::String))
    }

    /// Whether a nil of this type exists (Go's `canBeNil`).
    pub fn can_be_nil(&self) -> bool {
        matches!(
            self,
            GoType::Interface | GoType::Slice(_) | GoType::Map(_) | GoType::ReflectValue
        )
    }

    /// The zero value of the type (`reflect.Zero`).
    pub fn zero(&self) -> Value {
        match self {
            GoType::Bool => Value::Bool(false),
            GoType::Int => Value::Int(0),
            GoType::Int64 => Value::Int64(0),
            GoType::Float64 => Value::Float(0.0),
            GoType::String => Value::str(""),
            GoType::Interface | GoType::ReflectValue => Value::Nil,
            GoType::Slice(elem) => Value::Slice(Rc::new(SliceData {
                elem: (**elem).clone(),
                items: Vec::new(),
                nil: true,
            })),
            GoType::Map(elem) => Value::Map(MapRef::new_detached(MapData {
                elem: (**elem).clone(),
                entries: BTreeMap::new(),
                nil: true,
            })),
            GoType::Struct(name) => Value::Struct(Rc::new(StructData {
                type_name: name.clone(),
                fields: Vec::new(),
            })),
        }
    }
}

impl fmt::Display for GoType {
    /// The type's name as Go's `reflect.Type.String` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoType::Bool => f.write_str("bool"),
            GoType::Int => f.write_str("int"),
            GoType::Int64 => f.write_str("int64"),
            GoType::Float64 => f.write_str("float64"),
            GoType::String => f.write_str("string"),
            GoType::Interface => f.write_str("interface {}"),
            GoType::Slice(e) => write!(f, "[]{e}"),
            GoType::Map(e) => write!(f, "map[string]{e}"),
            GoType::Struct(name) => f.write_str(name),
            GoType::ReflectValue => f.write_str("reflect.Value"),
        }
    }
}

/// A Go value as a template sees it. Cheap to clone (containers are shared).
#[derive(Clone, Debug)]
pub enum Value {
    /// Go's invalid `reflect.Value`: no value at all (a missing map key with the
    /// default `missingkey` option). Prints as `<no value>`.
    Invalid,
    /// A nil `interface {}`. Prints as `<nil>`.
    Nil,
    /// `bool`
    Bool(bool),
    /// `int`
    Int(i64),
    /// `int64`
    Int64(i64),
    /// `float64`
    Float(f64),
    /// `string`. Go strings are byte strings; ours are UTF-8, and operations that
    /// would cut a character in two (byte slicing) replace the pieces with U+FFFD.
    Str(Rc<str>),
    /// A slice.
    Slice(Rc<SliceData>),
    /// A map with string keys.
    Map(MapRef),
    /// A struct.
    Struct(Rc<StructData>),
}

/// The contents of a slice value.
#[derive(Debug)]
pub struct SliceData {
    /// Element type.
    pub elem: GoType,
    /// Elements, each of type `elem` (or [`Value::Nil`] for a nil interface element).
    pub items: Vec<Value>,
    /// A nil slice (only distinguishable from an empty one by `toJson` and `eq nil`).
    pub nil: bool,
}

/// The contents of a map value.
#[derive(Debug)]
pub struct MapData {
    /// Element type.
    pub elem: GoType,
    /// Entries in key order.
    pub entries: BTreeMap<String, Value>,
    /// A nil map: reads work, writes fail as in Go.
    pub nil: bool,
}

/// A shared, mutable map (Go maps are references).
#[derive(Clone, Debug)]
pub struct MapRef(pub(crate) Rc<RefCell<MapData>>);

impl MapRef {
    /// A map not tracked by any execution heap. Used for input data and zero values;
    /// executions copy input data into their own heap before touching it.
    pub(crate) fn new_detached(data: MapData) -> MapRef {
        MapRef(Rc::new(RefCell::new(data)))
    }

    /// Borrow the contents.
    pub fn borrow(&self) -> std::cell::Ref<'_, MapData> {
        self.0.borrow()
    }

    pub(crate) fn borrow_mut(&self) -> std::cell::RefMut<'_, MapData> {
        self.0.borrow_mut()
    }

    /// Whether two references name the same map.
    pub fn same(&self, other: &MapRef) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// The contents of a struct value.
#[derive(Debug)]
pub struct StructData {
    /// The Go type name, e.g. `v1.SecretReference`.
    pub type_name: Arc<str>,
    /// Exported fields in declaration order.
    pub fields: Vec<(String, Value)>,
}

impl Value {
    /// A `string`.
    pub fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }

    /// A `string` from an owned `String`.
    pub fn string(s: String) -> Value {
        Value::Str(Rc::from(s))
    }

    /// A `[]T` with the given elements.
    pub fn slice(elem: GoType, items: Vec<Value>) -> Value {
        Value::Slice(Rc::new(SliceData {
            elem,
            items,
            nil: false,
        }))
    }

    /// A `[]string`.
    pub fn string_slice<I: IntoIterator<Item = String>>(items: I) -> Value {
        Value::slice(
            GoType::String,
            items.into_iter().map(Value::string).collect(),
        )
    }

    /// A `map[string]string` (the type of KubeBlocks' `Parameters`).
    pub fn string_map(entries: &BTreeMap<String, String>) -> Value {
        Value::Map(MapRef::new_detached(MapData {
            elem: GoType::String,
            entries: entries
                .iter()
                .map(|(k, v)| (k.clone(), Value::str(v)))
                .collect(),
            nil: false,
        }))
    }

    /// A map of element type `elem`, not tracked by an execution (input data).
    pub fn map(elem: GoType, entries: BTreeMap<String, Value>) -> Value {
        Value::Map(MapRef::new_detached(MapData {
            elem,
            entries,
            nil: false,
        }))
    }

    /// A struct of the named type with the given exported fields.
    pub fn structure(type_name: &str, fields: Vec<(&str, Value)>) -> Value {
        Value::Struct(Rc::new(StructData {
            type_name: Arc::from(type_name),
            fields: fields
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        }))
    }

    /// The value Go's `encoding/json` gives when unmarshalling into `interface {}`:
    /// objects become `map[string]interface {}`, arrays `[]interface {}`, numbers
    /// `float64`, `null` a nil interface.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::str(s),
            serde_json::Value::Array(a) => {
                Value::slice(GoType::Interface, a.iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(o) => Value::map(
                GoType::Interface,
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The Go type, or `None` for [`Value::Invalid`].
    pub fn go_type(&self) -> Option<GoType> {
        Some(match self {
            Value::Invalid => return None,
            Value::Nil => GoType::Interface,
            Value::Bool(_) => GoType::Bool,
            Value::Int(_) => GoType::Int,
            Value::Int64(_) => GoType::Int64,
            Value::Float(_) => GoType::Float64,
            Value::Str(_) => GoType::String,
            Value::Slice(s) => GoType::Slice(Box::new(s.elem.clone())),
            Value::Map(m) => GoType::Map(Box::new(m.borrow().elem.clone())),
            Value::Struct(s) => GoType::Struct(s.type_name.clone()),
        })
    }

    /// Go's `reflect.Kind` name of the value (`kindOf`): `invalid` for no value.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Invalid | Value::Nil => "invalid",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Int64(_) => "int64",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Slice(_) => "slice",
            Value::Map(_) => "map",
            Value::Struct(_) => "struct",
        }
    }

    /// Whether this is no value or a nil interface (both are Go's `nil` once passed as
    /// an `interface {}` argument).
    pub fn is_nil_like(&self) -> bool {
        matches!(self, Value::Invalid | Value::Nil)
    }

    /// Go's `indirectInterface`: a nil interface becomes no value.
    pub fn indirect(self) -> Value {
        match self {
            Value::Nil => Value::Invalid,
            v => v,
        }
    }

    /// Go's truth for `if`, `with`, `and`, `or`, `not`: false for no value, nil, false,
    /// zero numbers and empty strings, slices and maps; structs are always true.
    pub fn truth(&self) -> bool {
        match self {
            Value::Invalid | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) | Value::Int64(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Slice(s) => !s.items.is_empty(),
            Value::Map(m) => !m.borrow().entries.is_empty(),
            Value::Struct(_) => true,
        }
    }

    /// sprig's `empty`: like [`truth`](Value::truth) negated, except that a struct is
    /// never empty and a nil container is empty.
    pub fn is_empty(&self) -> bool {
        !self.truth()
    }

    /// The string inside a `string` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside an `int` or `int64`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) | Value::Int64(i) => Some(*i),
            _ => None,
        }
    }

    /// Length for `len` (strings count bytes, as in Go).
    pub fn len(&self) -> Option<usize> {
        match self {
            Value::Str(s) => Some(s.len()),
            Value::Slice(s) => Some(s.items.len()),
            Value::Map(m) => Some(m.borrow().entries.len()),
            _ => None,
        }
    }

    /// Go's `reflect.DeepEqual` over the values of this model (used by sprig's `has`,
    /// `uniq`, `without`, `deepEqual`).
    pub fn deep_equal(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Invalid | Value::Nil, Value::Invalid | Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) | (Value::Int64(a), Value::Int64(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Slice(a), Value::Slice(b)) => {
                a.elem == b.elem
                    && a.nil == b.nil
                    && a.items.len() == b.items.len()
                    && a.items.iter().zip(&b.items).all(|(x, y)| x.deep_equal(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                if a.same(b) {
                    return true;
                }
                let (a, b) = (a.borrow(), b.borrow());
                a.elem == b.elem
                    && a.nil == b.nil
                    && a.entries.len() == b.entries.len()
                    && a.entries
                        .iter()
                        .zip(&b.entries)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.deep_equal(vb))
            }
            (Value::Struct(a), Value::Struct(b)) => {
                a.type_name == b.type_name
                    && a.fields.len() == b.fields.len()
                    && a.fields
                        .iter()
                        .zip(&b.fields)
                        .all(|((na, va), (nb, vb))| na == nb && va.deep_equal(vb))
            }
            _ => false,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::str(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::string(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    /// An `int`.
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

/// Cut `s` at byte offsets like Go's `s[start:end]`, replacing a split character's
/// pieces with U+FFFD (Go would keep the raw bytes; our strings are UTF-8).
pub(crate) fn byte_slice(s: &str, start: usize, end: usize) -> String {
    String::from_utf8_lossy(&s.as_bytes()[start..end]).into_owned()
}
