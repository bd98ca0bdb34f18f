//! The executor: walks a [`Tree`] over data, with the semantics of Go's
//! `text/template` (`exec.go`).
//!
//! The rules kept, each with its visible effect:
//! - A pipeline's value is unwrapped from `interface {}` after each command: a nil
//!   element prints `<no value>` through `{{ . }}` but `<nil>` through `print`.
//! - A value read from an `interface {}` slot (an element of `[]interface {}`, a value
//!   of `map[string]interface {}`) keeps that static type until a pipeline unwraps it:
//!   `.x` on it fails with `can't evaluate field x in type interface {}`.
//! - Arguments are checked against the parameter types; untyped constants take the
//!   parameter's type; missing values are zero values of nil-able types.
//! - Variables: `:=` declares in the current scope, `=` assigns the innermost
//!   declaration; `if`/`with`/`range` scopes end at `{{end}}`; a `template` call starts
//!   with only `$`.
//! - `range` visits maps in sorted key order, slices in order, integers `0..n`; `else`
//!   runs when nothing was visited; `break`/`continue` end the iteration.
//!
//! Bounds (none of them in Go, all reported as execution errors): output bytes,
//! execution steps (each node, command and iteration is a step), and nesting depth of
//! branches, parenthesized pipelines and template calls (the stack).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::builtins;
use super::error::{line_col, Error};
use super::fmt::{sprint, Printer};
use super::funcs::{Ctx, Func, FuncMap, Heap, Imp};
use super::node::{Arg, Branch, Command, Node, Number, Pipe, Tree};
use super::value::{GoType, Value};
use super::{Limits, MissingKey};

/// A value together with whether it sits in an `interface {}`-typed slot.
#[derive(Clone, Debug)]
struct Slot {
    v: Value,
    boxed: bool,
}

impl Slot {
    fn plain(v: Value) -> Slot {
        Slot { v, boxed: false }
    }

    /// Go's unwrapping at the end of a pipeline stage: a nil interface becomes no value.
    fn unwrap(self) -> Value {
        match self.v {
            Value::Nil => Value::Invalid,
            v => v,
        }
    }

    fn type_name(&self) -> String {
        if self.boxed {
            return "interface {}".into();
        }
        self.v.go_type().map(|t| t.to_string()).unwrap_or_default()
    }
}

/// Where execution is, for error messages (Go's `state.node`).
#[derive(Clone, Copy)]
enum At<'t> {
    None,
    Node(&'t Node),
    Arg(&'t Arg),
    Cmd(&'t Command),
    Pipe(&'t Pipe),
}

enum Flow {
    Normal,
    Break,
    Continue,
}

type R<T> = Result<T, Error>;

/// The fixed inputs of one execution.
pub(crate) struct Env<'t> {
    pub trees: &'t BTreeMap<String, Arc<Tree>>,
    pub funcs: &'t FuncMap,
    pub builtins: &'t FuncMap,
    pub missing_key: MissingKey,
    pub limits: &'t Limits,
}

struct State<'t> {
    env: &'t Env<'t>,
    tree: &'t Tree,
    out: String,
    vars: Vec<(String, Slot)>,
    at: At<'t>,
    depth: usize,
    calls: usize,
    steps: u64,
    heap: Heap,
}

/// Execute the template named `name` over `data`.
pub(crate) fn execute(env: &Env<'_>, name: &str, data: &Value) -> Result<String, Error> {
    let Some(tree) = env.trees.get(name) else {
        return Err(Error::Template {
            template: name.to_string(),
            message: format!(
                "no template {} associated with template",
                super::fmt::quote(name, false)
            ),
        });
    };
    let mut heap = Heap::default();
    let data = heap.adopt(data, 0);
    let dot = Slot::plain(data);
    let mut s = State {
        env,
        tree,
        out: String::new(),
        vars: vec![("$".into(), dot.clone())],
        at: At::None,
        depth: 0,
        calls: 0,
        steps: 0,
        heap,
    };
    s.walk_list(&dot, &tree.root)?;
    Ok(std::mem::take(&mut s.out))
}

fn num_text(n: &Number) -> &str {
    &n.text
}

impl<'t> State<'t> {
    fn errorf(&self, message: String) -> Error {
        let (pos, context) = match self.at {
            At::None => {
                return Error::Template {
                    template: self.tree.name.clone(),
                    message,
                }
            }
            At::Node(n) => (n.pos(), n.to_string()),
            At::Arg(a) => (a.pos(), a.to_string()),
            At::Cmd(c) => (c.pos, c.to_string()),
            At::Pipe(p) => (p.pos, p.to_string()),
        };
        let (line, col) = line_col(&self.tree.text, pos);
        Error::Exec {
            name: self.tree.parse_name.to_string(),
            template: self.tree.name.clone(),
            line,
            col,
            context,
            message,
        }
    }

    fn step(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps > self.env.limits.max_steps {
            return Err(self.errorf(format!(
                "execution exceeded {} steps",
                self.env.limits.max_steps
            )));
        }
        Ok(())
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > self.env.limits.max_depth {
            return Err(self.errorf(format!(
                "exceeded maximum template depth ({})",
                self.env.limits.max_depth
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn write(&mut self, s: &str) -> R<()> {
        if self.out.len() + s.len() > self.env.limits.max_output_bytes {
            return Err(self.errorf(format!(
                "output exceeds the limit of {} bytes",
                self.env.limits.max_output_bytes
            )));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn var_value(&self, name: &str) -> R<Slot> {
        for (n, v) in self.vars.iter().rev() {
            if n == name {
                return Ok(v.clone());
            }
        }
        Err(self.errorf(format!("undefined variable: {name}")))
    }

    fn set_var(&mut self, name: &str, v: Slot) -> R<()> {
        for (n, slot) in self.vars.iter_mut().rev() {
            if n == name {
                *slot = v;
                return Ok(());
            }
        }
        Err(self.errorf(format!("undefined variable: {name}")))
    }

    fn walk_list(&mut self, dot: &Slot, list: &'t [Node]) -> R<Flow> {
        for n in list {
            match self.walk(dot, n)? {
                Flow::Normal => {}
                f => return Ok(f),
            }
        }
        Ok(Flow::Normal)
    }

    fn walk(&mut self, dot: &Slot, node: &'t Node) -> R<Flow> {
        self.at = At::Node(node);
        self.step()?;
        match node {
            Node::Text { text, .. } => {
                self.write(text)?;
            }
            Node::Action { pipe, .. } => {
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    self.at = At::Node(node);
                    self.print_value(&v)?;
                }
            }
            Node::If(b) => return self.walk_if_with(false, dot, b),
            Node::With(b) => return self.walk_if_with(true, dot, b),
            Node::Range(b) => return self.walk_range(dot, b, node),
            Node::Template { name, pipe, .. } => {
                self.walk_template(dot, name, pipe.as_ref())?;
            }
            Node::Break { .. } => return Ok(Flow::Break),
            Node::Continue { .. } => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn print_value(&mut self, v: &Value) -> R<()> {
        if matches!(v, Value::Invalid) {
            return self.write("<no value>");
        }
        let mut p = Printer::new(self.env.limits.max_output_bytes);
        sprint(&mut p, std::slice::from_ref(v));
        if p.overflowed() {
            return Err(self.errorf(format!(
                "output exceeds the limit of {} bytes",
                self.env.limits.max_output_bytes
            )));
        }
        let s = p.finish();
        self.write(&s)
    }

    fn walk_if_with(&mut self, with: bool, dot: &Slot, b: &'t Branch) -> R<Flow> {
        self.enter()?;
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let flow = if val.truth() {
            if with {
                self.walk_list(&Slot::plain(val), &b.list)?
            } else {
                self.walk_list(dot, &b.list)?
            }
        } else if let Some(e) = &b.else_list {
            self.walk_list(dot, e)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        self.leave();
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Slot, b: &'t Branch, node: &'t Node) -> R<Flow> {
        self.enter()?;
        let outer = self.vars.len();
        self.at = At::Node(node);
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let mark = self.vars.len();
        let mut visited = false;
        match &val {
            Value::Slice(s) => {
                let boxed = s.elem == GoType::Interface;
                for (i, item) in s.items.iter().enumerate() {
                    visited = true;
                    let elem = Slot {
                        v: item.clone(),
                        boxed,
                    };
                    if self.one_iteration(b, mark, Value::Int(i as i64), elem)? {
                        break;
                    }
                }
            }
            Value::Map(m) => {
                let (entries, boxed) = {
                    let m = m.borrow();
                    (
                        m.entries
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect::<Vec<_>>(),
                        m.elem == GoType::Interface,
                    )
                };
                for (k, v) in entries {
                    visited = true;
                    let elem = Slot { v, boxed };
                    if self.one_iteration(b, mark, Value::string(k), elem)? {
                        break;
                    }
                }
            }
            Value::Int(n) | Value::Int64(n) => {
                if b.pipe.decl.len() > 1 {
                    let shown = super::fmt::to_string(&val, 64);
                    return Err(self.errorf(format!(
                        "can't use {shown} to iterate over more than one variable"
                    )));
                }
                let int64 = matches!(val, Value::Int64(_));
                for i in 0..*n {
                    visited = true;
                    let v = if int64 {
                        Value::Int64(i)
                    } else {
                        Value::Int(i)
                    };
                    if self.one_iteration(b, mark, Value::Invalid, Slot::plain(v))? {
                        break;
                    }
                }
            }
            Value::Invalid => {}
            other => {
                let shown = super::fmt::to_string(other, 4096);
                return Err(self.errorf(format!("range can't iterate over {shown}")));
            }
        }
        let mut flow = Flow::Normal;
        if !visited {
            if let Some(e) = &b.else_list {
                flow = self.walk_list(dot, e)?;
            }
        }
        self.vars.truncate(outer);
        self.leave();
        Ok(flow)
    }

    /// One iteration of a range; true when the body said `break`.
    fn one_iteration(&mut self, b: &'t Branch, mark: usize, index: Value, elem: Slot) -> R<bool> {
        self.step()?;
        let decl = &b.pipe.decl;
        if !decl.is_empty() {
            if b.pipe.is_assign {
                if decl.len() > 1 {
                    self.set_var(&decl[0].name, Slot::plain(index.clone()))?;
                } else {
                    self.set_var(&decl[0].name, elem.clone())?;
                }
            } else if let Some(top) = self.vars.last_mut() {
                top.1 = elem.clone();
            }
        }
        if decl.len() > 1 {
            if b.pipe.is_assign {
                self.set_var(&decl[1].name, elem.clone())?;
            } else {
                let n = self.vars.len();
                self.vars[n - 2].1 = Slot::plain(index);
            }
        }
        let flow = self.walk_list(&elem, &b.list)?;
        self.vars.truncate(mark);
        Ok(matches!(flow, Flow::Break))
    }

    fn walk_template(&mut self, dot: &Slot, name: &str, pipe: Option<&'t Pipe>) -> R<()> {
        let Some(tree) = self.env.trees.get(name) else {
            return Err(self.errorf(format!(
                "template {} not defined",
                super::fmt::quote(name, false)
            )));
        };
        if self.calls >= self.env.limits.max_depth {
            return Err(self.errorf(format!(
                "exceeded maximum template depth ({})",
                self.env.limits.max_depth
            )));
        }
        let new_dot = match pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => Value::Invalid,
        };
        self.enter()?;
        self.calls += 1;
        let new_dot = Slot::plain(new_dot);
        let saved_vars = std::mem::replace(&mut self.vars, vec![("$".into(), new_dot.clone())]);
        let saved_tree = self.tree;
        let tree: &'t Tree = tree;
        self.tree = tree;
        let r = self.walk_list(&new_dot, &tree.root);
        self.tree = saved_tree;
        self.vars = saved_vars;
        self.calls -= 1;
        self.leave();
        r.map(|_| ())
    }

    fn eval_pipeline(&mut self, dot: &Slot, pipe: &'t Pipe) -> R<Value> {
        self.at = At::Pipe(pipe);
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            let v = self.eval_command(dot, cmd, value.take())?;
            value = Some(v.unwrap());
        }
        let v = value.unwrap_or(Value::Invalid);
        for d in &pipe.decl {
            if pipe.is_assign {
                self.set_var(&d.name, Slot::plain(v.clone()))?;
            } else {
                self.vars.push((d.name.clone(), Slot::plain(v.clone())));
            }
        }
        Ok(v)
    }

    fn not_a_function(&self, args: &'t [Arg], fin: &Option<Value>) -> R<()> {
        if args.len() > 1 || fin.is_some() {
            return Err(self.errorf(format!("can't give argument to non-function {}", args[0])));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Slot, cmd: &'t Command, fin: Option<Value>) -> R<Slot> {
        self.step()?;
        let first = &cmd.args[0];
        match first {
            Arg::Field { idents, .. } => {
                self.at = At::Arg(first);
                return self.eval_field_chain(dot, dot.clone(), first, idents, &cmd.args, fin);
            }
            Arg::Chain { node, fields, .. } => {
                return self.eval_chain(dot, first, node, fields, &cmd.args, fin)
            }
            Arg::Identifier { name, .. } => {
                self.at = At::Arg(first);
                return self.eval_function(dot, name, cmd, &cmd.args, fin);
            }
            Arg::Pipe(p) => {
                self.not_a_function(&cmd.args, &fin)?;
                self.enter()?;
                let v = self.eval_pipeline(dot, p);
                self.leave();
                return Ok(Slot::plain(v?));
            }
            Arg::Variable { idents, .. } => {
                return self.eval_variable(dot, first, idents, &cmd.args, fin)
            }
            _ => {}
        }
        self.at = At::Arg(first);
        self.not_a_function(&cmd.args, &fin)?;
        Ok(match first {
            Arg::Bool { val, .. } => Slot::plain(Value::Bool(*val)),
            Arg::Dot { .. } => dot.clone(),
            Arg::Nil { .. } => return Err(self.errorf("nil is not a command".into())),
            Arg::Number { num, .. } => Slot::plain(self.ideal_constant(first, num)?),
            Arg::String { text, .. } => Slot::plain(Value::str(text)),
            _ => {
                return Err(self.errorf(format!(
                    "can't evaluate command {}",
                    super::fmt::quote(&first.to_string(), false)
                )))
            }
        })
    }

    fn ideal_constant(&mut self, at: &'t Arg, n: &Number) -> R<Value> {
        self.at = At::Arg(at);
        let t = num_text(n);
        let hex_int = t.len() > 2
            && t.starts_with('0')
            && matches!(t.as_bytes()[1], b'x' | b'X')
            && !t.contains(['p', 'P']);
        let rune = t.starts_with('\'');
        if n.is_float && !hex_int && !rune && t.contains(['.', 'e', 'E', 'p', 'P']) {
            return Ok(Value::Float(n.float));
        }
        if n.is_int {
            return Ok(Value::Int(n.int));
        }
        if n.is_uint {
            return Err(self.errorf(format!("{t} overflows int")));
        }
        Ok(Value::Invalid)
    }

    fn eval_chain(
        &mut self,
        dot: &Slot,
        at: &'t Arg,
        node: &'t Arg,
        fields: &'t [String],
        args: &'t [Arg],
        fin: Option<Value>,
    ) -> R<Slot> {
        self.at = At::Arg(at);
        if let Arg::Nil { .. } = node {
            return Err(self.errorf(format!("indirection through explicit nil in {at}")));
        }
        let recv = self.eval_arg(dot, None, node)?;
        self.eval_field_chain(dot, recv, at, fields, args, fin)
    }

    fn eval_variable(
        &mut self,
        dot: &Slot,
        at: &'t Arg,
        idents: &'t [String],
        args: &'t [Arg],
        fin: Option<Value>,
    ) -> R<Slot> {
        self.at = At::Arg(at);
        let v = self.var_value(&idents[0])?;
        if idents.len() == 1 {
            self.not_a_function(args, &fin)?;
            return Ok(v);
        }
        self.eval_field_chain(dot, v, at, &idents[1..], args, fin)
    }

    fn eval_field_chain(
        &mut self,
        _dot: &Slot,
        mut recv: Slot,
        _at: &'t Arg,
        idents: &'t [String],
        args: &'t [Arg],
        fin: Option<Value>,
    ) -> R<Slot> {
        let n = idents.len();
        for id in &idents[..n - 1] {
            recv = self.eval_field(id, &[], &None, recv)?;
        }
        self.eval_field(&idents[n - 1], args, &fin, recv)
    }

    fn eval_field(&mut self, name: &str, args: &[Arg], fin: &Option<Value>, recv: Slot) -> R<Slot> {
        if matches!(recv.v, Value::Invalid) {
            if self.env.missing_key == MissingKey::Error {
                return Err(self.errorf(format!(
                    "nil data; no entry for key {}",
                    super::fmt::quote(name, false)
                )));
            }
            return Ok(Slot::plain(Value::Invalid));
        }
        let typ = recv.type_name();
        let has_args = args.len() > 1 || fin.is_some();
        match &recv.v {
            Value::Nil => {
                return Err(self.errorf(format!("nil pointer evaluating {typ}.{name}")));
            }
            Value::Struct(s) => {
                if let Some((_, v)) = s.fields.iter().find(|(n, _)| n == name) {
                    if has_args {
                        return Err(self.errorf(format!(
                            "{name} has arguments but cannot be invoked as function"
                        )));
                    }
                    return Ok(Slot::plain(v.clone()));
                }
            }
            Value::Map(m) => {
                if has_args {
                    return Err(self.errorf(format!("{name} is not a method but has arguments")));
                }
                let m = m.borrow();
                let boxed = m.elem == GoType::Interface;
                return Ok(match m.entries.get(name) {
                    Some(v) => Slot {
                        v: v.clone(),
                        boxed,
                    },
                    None => match self.env.missing_key {
                        MissingKey::Default => Slot::plain(Value::Invalid),
                        MissingKey::Zero => Slot {
                            v: m.elem.zero(),
                            boxed,
                        },
                        MissingKey::Error => {
                            drop(m);
                            return Err(self.errorf(format!(
                                "map has no entry for key {}",
                                super::fmt::quote(name, false)
                            )));
                        }
                    },
                });
            }
            _ => {}
        }
        Err(self.errorf(format!("can't evaluate field {name} in type {typ}")))
    }

    fn lookup(&self, name: &str) -> Option<(&'t Func, bool)> {
        if let Some(f) = self.env.funcs.get(name) {
            return Some((f, false));
        }
        self.env.builtins.get(name).map(|f| (f, true))
    }

    fn eval_function(
        &mut self,
        dot: &Slot,
        name: &'t str,
        cmd: &'t Command,
        args: &'t [Arg],
        fin: Option<Value>,
    ) -> R<Slot> {
        let Some((f, builtin)) = self.lookup(name) else {
            return Err(self.errorf(format!(
                "{} is not a defined function",
                super::fmt::quote(name, false)
            )));
        };
        self.eval_call(dot, f, builtin, At::Cmd(cmd), name, args, fin)
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_call(
        &mut self,
        dot: &Slot,
        f: &'t Func,
        builtin: bool,
        node: At<'t>,
        name: &str,
        args: &'t [Arg],
        fin: Option<Value>,
    ) -> R<Slot> {
        let args = if args.is_empty() { args } else { &args[1..] };
        let num_in = args.len() + usize::from(fin.is_some());
        let num_fixed = if f.variadic.is_some() {
            if num_in < f.params.len() {
                return Err(self.errorf(format!(
                    "wrong number of args for {name}: want at least {} got {}",
                    f.params.len(),
                    args.len()
                )));
            }
            f.params.len()
        } else {
            if num_in != f.params.len() {
                return Err(self.errorf(format!(
                    "wrong number of args for {name}: want {} got {num_in}",
                    f.params.len()
                )));
            }
            args.len()
        };
        if builtin && (name == "and" || name == "or") {
            let want = name == "or";
            let mut v = Value::Invalid;
            for a in args {
                v = self.eval_arg(dot, Some(&GoType::ReflectValue), a)?.v;
                if v.truth() == want {
                    return Ok(Slot::plain(v));
                }
            }
            if let Some(fv) = fin {
                v = fv;
            }
            return Ok(Slot::plain(v));
        }
        let mut argv = Vec::with_capacity(num_in);
        let mut i = 0;
        while i < num_fixed && i < args.len() {
            let v = self.eval_arg(dot, Some(&f.params[i]), &args[i])?;
            argv.push(v.v);
            i += 1;
        }
        if let Some(rest) = &f.variadic {
            while i < args.len() {
                let v = self.eval_arg(dot, Some(rest), &args[i])?;
                argv.push(v.v);
                i += 1;
            }
        }
        if let Some(fv) = fin {
            let t = match &f.variadic {
                Some(rest) => {
                    if num_in - 1 < num_fixed {
                        &f.params[num_in - 1]
                    } else {
                        rest
                    }
                }
                None => &f.params[f.params.len() - 1],
            };
            let v = self.validate_type(Slot::plain(fv), Some(t))?;
            argv.push(v.v);
        }
        let mut ctx = Ctx {
            heap: &mut self.heap,
            limits: self.env.limits,
        };
        let result = match &f.imp {
            Imp::Native(body) => body(&mut ctx, &argv),
            Imp::Custom(body) => body(&mut ctx, &argv),
            Imp::Unsupported => Err(format!(
                "the sprig function {} is not implemented by dprepo's template engine",
                super::fmt::quote(name, false)
            )),
        };
        match result {
            Ok(v) => {
                // A result of type interface {} (nil or a value) stays boxed until the
                // pipeline unwraps it; only a nil is visible here.
                Ok(Slot::plain(v))
            }
            Err(e) => {
                self.at = node;
                let e = if builtin && name == "call" {
                    // Go names the function operand in call's error.
                    match (args.first(), e.as_str()) {
                        (Some(a), m) if m.starts_with("non-function of type") => {
                            format!(
                                "non-function {a} of type{}",
                                &m["non-function of type".len()..]
                            )
                        }
                        _ => e,
                    }
                } else {
                    e
                };
                Err(self.errorf(format!("error calling {name}: {e}")))
            }
        }
    }

    /// Go's `validateType`; `typ` None accepts anything.
    fn validate_type(&self, v: Slot, typ: Option<&GoType>) -> R<Slot> {
        let Some(typ) = typ else {
            return Ok(v);
        };
        if matches!(v.v, Value::Invalid) {
            if *typ == GoType::ReflectValue {
                return Ok(v);
            }
            if typ.can_be_nil() {
                return Ok(Slot::plain(typ.zero()));
            }
            return Err(self.errorf(format!("invalid value; expected {typ}")));
        }
        if *typ == GoType::ReflectValue || *typ == GoType::Interface {
            return Ok(v);
        }
        let actual = v.v.go_type();
        if actual.as_ref() == Some(typ) {
            return Ok(Slot::plain(v.v));
        }
        let got = actual.map(|t| t.to_string()).unwrap_or_default();
        Err(self.errorf(format!("wrong type for value; expected {typ}; got {got}")))
    }

    fn eval_arg(&mut self, dot: &Slot, typ: Option<&GoType>, n: &'t Arg) -> R<Slot> {
        self.at = At::Arg(n);
        match n {
            Arg::Dot { .. } => return self.validate_type(dot.clone(), typ),
            Arg::Nil { .. } => {
                return match typ {
                    Some(t) if t.can_be_nil() => Ok(Slot::plain(if *t == GoType::ReflectValue {
                        Value::Invalid
                    } else {
                        t.zero()
                    })),
                    Some(t) => Err(self.errorf(format!("cannot assign nil to {t}"))),
                    None => Err(self.errorf("cannot assign nil to <nil>".into())),
                }
            }
            Arg::Field { idents, .. } => {
                let v = self.eval_field_chain(
                    dot,
                    dot.clone(),
                    n,
                    idents,
                    std::slice::from_ref(n),
                    None,
                )?;
                return self.validate_type(v, typ);
            }
            Arg::Variable { idents, .. } => {
                let v = self.eval_variable(dot, n, idents, &[], None)?;
                return self.validate_type(v, typ);
            }
            Arg::Pipe(p) => {
                self.enter()?;
                let v = self.eval_pipeline(dot, p);
                self.leave();
                return self.validate_type(Slot::plain(v?), typ);
            }
            Arg::Identifier { name, .. } => {
                let v = self.eval_function_bare(dot, name, n)?;
                return self.validate_type(v, typ);
            }
            Arg::Chain { node, fields, .. } => {
                let v = self.eval_chain(dot, n, node, fields, &[], None)?;
                return self.validate_type(v, typ);
            }
            _ => {}
        }
        let Some(typ) = typ else {
            return self.eval_empty_interface(dot, n);
        };
        match typ {
            GoType::Bool => match n {
                Arg::Bool { val, .. } => Ok(Slot::plain(Value::Bool(*val))),
                _ => Err(self.errorf(format!("expected bool; found {n}"))),
            },
            GoType::Float64 => match n {
                Arg::Number { num, .. } if num.is_float => Ok(Slot::plain(Value::Float(num.float))),
                _ => Err(self.errorf(format!("expected float; found {n}"))),
            },
            GoType::Int | GoType::Int64 => match n {
                Arg::Number { num, .. } if num.is_int => Ok(Slot::plain(if *typ == GoType::Int {
                    Value::Int(num.int)
                } else {
                    Value::Int64(num.int)
                })),
                _ => Err(self.errorf(format!("expected integer; found {n}"))),
            },
            GoType::Interface | GoType::ReflectValue => self.eval_empty_interface(dot, n),
            GoType::String => match n {
                Arg::String { text, .. } => Ok(Slot::plain(Value::str(text))),
                _ => Err(self.errorf(format!("expected string; found {n}"))),
            },
            t => Err(self.errorf(format!("can't handle {n} for arg of type {t}"))),
        }
    }

    /// A function named as an argument, called with no arguments.
    fn eval_function_bare(&mut self, dot: &Slot, name: &'t str, n: &'t Arg) -> R<Slot> {
        self.at = At::Arg(n);
        let Some((f, builtin)) = self.lookup(name) else {
            return Err(self.errorf(format!(
                "{} is not a defined function",
                super::fmt::quote(name, false)
            )));
        };
        self.eval_call(dot, f, builtin, At::Arg(n), name, &[], None)
    }

    fn eval_empty_interface(&mut self, dot: &Slot, n: &'t Arg) -> R<Slot> {
        self.at = At::Arg(n);
        match n {
            Arg::Bool { val, .. } => Ok(Slot::plain(Value::Bool(*val))),
            Arg::Dot { .. } => Ok(dot.clone()),
            Arg::Field { idents, .. } => {
                self.eval_field_chain(dot, dot.clone(), n, idents, &[], None)
            }
            Arg::Identifier { name, .. } => self.eval_function_bare(dot, name, n),
            Arg::Nil { .. } => Err(self.errorf("evalEmptyInterface: nil (can't happen)".into())),
            Arg::Number { num, .. } => Ok(Slot::plain(self.ideal_constant(n, num)?)),
            Arg::String { text, .. } => Ok(Slot::plain(Value::str(text))),
            Arg::Variable { idents, .. } => self.eval_variable(dot, n, idents, &[], None),
            Arg::Pipe(p) => {
                self.enter()?;
                let v = self.eval_pipeline(dot, p);
                self.leave();
                Ok(Slot::plain(v?))
            }
            Arg::Chain { .. } => Err(self.errorf(format!(
                "can't handle assignment of {n} to empty interface argument"
            ))),
        }
    }
}

/// The builtin function map, built once.
pub(crate) fn builtin_map() -> &'static FuncMap {
    static B: std::sync::OnceLock<FuncMap> = std::sync::OnceLock::new();
    B.get_or_init(builtins::builtins)
}
