#!/usr/bin/env python3
"""Find dependency cycles between the top-level modules of a Rust crate.

Usage:
    python3 scripts/module-cycles.py [--tests] [--edges] [SRC_DIR ...]
    python3 scripts/module-cycles.py --self-test

SRC_DIR is a crate's `src/` folder (default: repo-format/src and tools/src, relative to
the repository root). For each crate the script reads every `.rs` file, finds the
references from one top-level module to another and builds the graph of top-level
modules (`backup/walker.rs` belongs to `backup`). A reference is a path that starts with

  * `crate::x` (also inside `use crate::{x, y::z}` groups, `pub use` included);
  * `super::` when it climbs out of the top-level module (`super::x` in `gc.rs`, or
    `super::super::x` in `gc/plan.rs`, counting inline `mod` blocks);
  * a name the crate root re-exports (`crate::Error` counts as a reference to `error`
    because lib.rs has `pub use error::{Error, Result}`).

Comments (doc comments and intra-doc links too), string and char literals and `$crate`
(macros) are ignored. The crate root (lib.rs or main.rs) is the facade that declares the
modules: it is not a node, so a module that uses an item defined in the root does not
make a cycle. Files under `src/bin/` are separate crates and are skipped.

By default only production code counts: an item behind `#[cfg(test)]` (a `mod tests`
block, a test-only `use` or function) and a file declared by `#[cfg(test)] mod x;` are
left out, and so is `#[cfg(doc)]`. `--tests` counts them too.

Output: every strongly connected component of more than one module, and for each edge
inside it one example reference (file:line and the line). `--edges` also prints the whole
graph. Exit status: 0 without a cycle, 1 when a cycle exists, 2 on a usage error.
"""

import argparse
import collections
import os
import sys
import unittest

# --------------------------------------------------------------------------------------
# Lexing: comments and literals out, tokens with line numbers in.

def tokenize(text):
    """Return a list of (token, line) with comments, strings and chars removed.

    Tokens are identifiers, `::`, and single punctuation characters. A lifetime (`'a`)
    is dropped; a char literal (`'x'`, `'\\n'`, `b'x'`) is dropped.
    """
    tokens = []
    i = 0
    n = len(text)
    line = 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            depth = 0
            while i < n:
                if text.startswith("/*", i):
                    depth += 1
                    i += 2
                elif text.startswith("*/", i):
                    depth -= 1
                    i += 2
                    if depth == 0:
                        break
                else:
                    if text[i] == "\n":
                        line += 1
                    i += 1
        elif c == "r" and _raw_string_at(text, i):
            i, line = _skip_raw_string(text, i, line)
        elif c == "b" and i + 1 < n and text[i + 1] == "r" and _raw_string_at(text, i + 1, after_b=True):
            i, line = _skip_raw_string(text, i + 1, line)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                if i < n and text[i] == "\n":
                    line += 1
                i += 1
            i += 1
        elif c == "'":
            # char literal or lifetime
            if i + 3 < n and text[i + 1] == "\\":
                j = text.find("'", i + 3)
                i = (j + 1) if j != -1 else n
            elif i + 2 < n and text[i + 2] == "'":
                i += 3
            else:
                i += 1
                while i < n and (text[i].isalnum() or text[i] == "_"):
                    i += 1
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            if word == "b" and j < n and text[j] in "'\"":
                i = j  # byte string / byte char: the literal branch skips it next
                continue
            tokens.append((word, line))
            i = j
        elif c.isdigit():
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_."):
                if text[j] == "." and not (j + 1 < n and text[j + 1].isdigit()):
                    break
                j += 1
            i = j
        elif text.startswith("::", i):
            tokens.append(("::", line))
            i += 2
        else:
            tokens.append((c, line))
            i += 1
    return tokens


def _raw_string_at(text, i, after_b=False):
    """Whether a raw string literal (`r"..."`, `r#"..."#`) starts at text[i]."""
    j = i + 1
    while j < len(text) and text[j] == "#":
        j += 1
    starts_word = after_b or i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
    return j < len(text) and text[j] == '"' and starts_word


def _skip_raw_string(text, i, line):
    j = i + 1
    hashes = 0
    while text[j] == "#":
        hashes += 1
        j += 1
    end = '"' + "#" * hashes
    k = text.find(end, j + 1)
    k = len(text) if k == -1 else k + len(end)
    line += text.count("\n", i, k)
    return k, line


# --------------------------------------------------------------------------------------
# Parsing one file: references, inline modules, cfg(test) items.

OPEN = {"{": "}", "(": ")", "[": "]"}
EXCLUDED_CFGS = (["cfg", "(", "test", ")"], ["cfg", "(", "doc", ")"])


def _attr_end(tokens, i):
    """tokens[i] is '#'; return the index after the closing ']' of the attribute."""
    j = i + 1
    if j < len(tokens) and tokens[j][0] == "!":
        j += 1
    if j >= len(tokens) or tokens[j][0] != "[":
        return i + 1
    depth = 0
    while j < len(tokens):
        t = tokens[j][0]
        if t in OPEN:
            depth += 1
        elif t in OPEN.values():
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


ITEM_KEYWORDS = {
    "fn", "mod", "impl", "use", "struct", "enum", "trait", "const", "static", "type",
    "async", "unsafe", "extern", "macro_rules", "union",
}


def _item_end(tokens, i):
    """Index after the item starting at tokens[i].

    An item ends at its `;` or at the end of its first `{...}` block. Something that is
    not an item (a struct field, a `let`, a match arm) also ends at a `,`, and anything
    ends where its enclosing block closes.
    """
    k = i
    while k < len(tokens) and tokens[k][0] == "#":
        k = _attr_end(tokens, k)
    if k < len(tokens) and tokens[k][0] == "pub":
        k += 1
        if k < len(tokens) and tokens[k][0] == "(":
            k = _close_paren(tokens, k)
    is_item = k < len(tokens) and tokens[k][0] in ITEM_KEYWORDS
    depth = 0
    j = i
    while j < len(tokens):
        t = tokens[j][0]
        if t == "#" and depth == 0:
            j = _attr_end(tokens, j)
            continue
        if t in OPEN:
            depth += 1
        elif t in OPEN.values():
            depth -= 1
            if depth < 0:
                return j
            if depth == 0 and t == "}":
                return j + 1
        elif depth == 0 and (t == ";" or (t == "," and not is_item)):
            return j + 1
        j += 1
    return j


def _group_heads(tokens, i):
    """tokens[i] is '{' of a use group; return ([(name, line)], index after '}').

    Each entry is the first segment of one item of the group (`self` and `*` dropped).
    """
    heads = []
    depth = 0
    expect_head = True
    j = i
    while j < len(tokens):
        t, ln = tokens[j]
        if t == "{":
            depth += 1
            if depth == 1:
                expect_head = True
        elif t == "}":
            depth -= 1
            if depth == 0:
                return heads, j + 1
        elif t == "," and depth == 1:
            expect_head = True
        elif depth == 1 and expect_head:
            if t not in ("self", "*") and (t[0].isalpha() or t[0] == "_"):
                heads.append((t, ln))
            expect_head = False
        j += 1
    return heads, j


def parse_file(text, module_path):
    """Scan one file of module `module_path` (a list of segments; [] for the root).

    Returns (refs, test_children) where refs is a list of (kind, target, line, is_test)
    with kind 'crate' (target: first segment after the crate root) or 'module'
    (target: a top-level module reached through `super::`), and test_children the
    names of child modules declared `#[cfg(test)] mod x;` (or `#[cfg(doc)]`).
    """
    tokens = tokenize(text)
    refs = []
    test_children = []
    inline = []  # stack of (name, depth at which its block closes)
    excluded_until = -1  # token index before which code is test-only
    depth = 0
    i = 0
    n = len(tokens)
    while i < n:
        t, ln = tokens[i]
        in_test = i < excluded_until
        if t == "#":
            end = _attr_end(tokens, i)
            attr = [x[0] for x in tokens[i + 2 : end - 1]] if end - 1 > i + 2 else []
            if not in_test and attr in EXCLUDED_CFGS:
                item_end = _item_end(tokens, end)
                excluded_until = item_end
                # `#[cfg(test)] mod name;` declares a test-only file.
                k = end
                while k < n and tokens[k][0] == "#":
                    k = _attr_end(tokens, k)
                if k < n and tokens[k][0] == "pub":
                    k += 1
                    if k < n and tokens[k][0] == "(":
                        k = _close_paren(tokens, k)
                if k + 2 < n and tokens[k][0] == "mod" and tokens[k + 2][0] == ";":
                    test_children.append(tokens[k + 1][0])
            i = end
            continue
        if t == "mod" and i + 2 < n and tokens[i + 2][0] == "{":
            inline.append((tokens[i + 1][0], depth + 1))
            depth += 1
            i += 3
            continue
        if t in OPEN:
            depth += 1
        elif t in OPEN.values():
            if inline and t == "}" and inline[-1][1] == depth:
                inline.pop()
            depth -= 1
        elif t == "crate" and i + 1 < n and tokens[i + 1][0] == "::":
            if i > 0 and tokens[i - 1][0] == "$":
                i += 1
                continue
            if i > 0 and tokens[i - 1][0] == "::":
                i += 1
                continue
            nxt = tokens[i + 2] if i + 2 < n else None
            if nxt and nxt[0] == "{":
                heads, after = _group_heads(tokens, i + 2)
                for name, hl in heads:
                    refs.append(("crate", name, hl, in_test))
                i = after
                continue
            if nxt and (nxt[0][0].isalpha() or nxt[0][0] == "_"):
                refs.append(("crate", nxt[0], ln, in_test))
            i += 2
            continue
        elif t == "super" and i + 1 < n and tokens[i + 1][0] == "::":
            if i > 0 and tokens[i - 1][0] == "::":
                i += 1
                continue
            ups = 0
            j = i
            while j + 1 < n and tokens[j][0] == "super" and tokens[j + 1][0] == "::":
                ups += 1
                j += 2
            here = list(module_path) + [name for name, _ in inline]
            target = here[: max(len(here) - ups, 0)] if ups <= len(here) else None
            if target is None:
                i = j
                continue
            if target:
                refs.append(("module", target[0], ln, in_test))
                i = j
                continue
            # climbed to the crate root: the next segment names the module
            nxt = tokens[j] if j < n else None
            if nxt and nxt[0] == "{":
                heads, after = _group_heads(tokens, j)
                for name, hl in heads:
                    refs.append(("crate", name, hl, in_test))
                i = after
                continue
            if nxt and (nxt[0][0].isalpha() or nxt[0][0] == "_"):
                refs.append(("crate", nxt[0], ln, in_test))
            i = j
            continue
        i += 1
    return refs, test_children


def _close_paren(tokens, k):
    depth = 0
    while k < len(tokens):
        if tokens[k][0] == "(":
            depth += 1
        elif tokens[k][0] == ")":
            depth -= 1
            if depth == 0:
                return k + 1
        k += 1
    return k


def root_names(text):
    """Names the crate root defines or re-exports: {name: module or None}.

    `pub use error::{Error, Result};` maps Error and Result to `error`; `pub use
    dprepo_chunker as chunker;` maps chunker to None (another crate); items defined in the
    root (`pub struct Cli`) map to None. Module declarations are returned separately by
    the caller from the file tree.
    """
    tokens = tokenize(text)
    names = {}
    i = 0
    n = len(tokens)
    depth = 0
    while i < n:
        t = tokens[i][0]
        if t in OPEN:
            depth += 1
        elif t in OPEN.values():
            depth -= 1
        elif depth == 0 and t == "use":
            end = _item_end(tokens, i)
            _use_leaves([x[0] for x in tokens[i + 1 : end]], names)
            i = end
            continue
        elif depth == 0 and t in ("struct", "enum", "fn", "const", "static", "type", "trait", "union"):
            if i + 1 < n:
                names.setdefault(tokens[i + 1][0], None)
        i += 1
    return names


def _use_leaves(toks, names):
    """Record the leaves of one `use` tree (tokens after `use`) by their first segment."""
    toks = [t for t in toks if t != ";"]
    if toks and toks[0] == "crate" and len(toks) > 2:
        toks = toks[2:]
    if not toks:
        return
    head = toks[0]

    def leaves(seq):
        # returns names introduced by a use tree
        out = []
        depth = 0
        cur = []
        parts = []
        for t in seq:
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
            if t == "," and depth == 0:
                parts.append(cur)
                cur = []
            else:
                cur.append(t)
        parts.append(cur)
        for p in parts:
            if not p:
                continue
            if "as" in p and "{" not in p:
                out.append(p[p.index("as") + 1])
            elif p[-1] == "}":
                k = p.index("{")
                out.extend(leaves(p[k + 1 : -1]))
            elif p[-1] not in ("*", "self"):
                out.append(p[-1])
        return out

    for leaf in leaves(toks):
        names[leaf] = head


# --------------------------------------------------------------------------------------
# The crate: files -> module paths -> graph.


def module_path_of(rel):
    """`backup/walker.rs` -> ['backup', 'walker']; `gc/mod.rs` -> ['gc']; lib.rs -> []."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]):
        return []
    return parts


def scan_crate(src, include_tests=False):
    """Return (edges, modules): edges maps (a, b) to a sorted list of (file, line, text)."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        if rel_dir == "bin" or rel_dir.startswith("bin" + os.sep):
            dirnames[:] = []
            continue
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith(".rs"):
                rel = os.path.normpath(os.path.join(rel_dir, f))
                files[rel] = os.path.join(dirpath, f)
    root_file = "lib.rs" if "lib.rs" in files else "main.rs"
    if root_file not in files:
        raise SystemExit(f"{src}: no lib.rs or main.rs")
    if root_file == "lib.rs":
        files.pop("main.rs", None)  # a binary beside the library: another crate
    modules = set()
    for rel in files:
        mp = module_path_of(rel)
        if mp:
            modules.add(mp[0])

    texts = {rel: open(path, encoding="utf-8").read() for rel, path in files.items()}
    root = root_names(texts[root_file])

    parsed = {}
    test_files = set()
    for rel, text in texts.items():
        mp = module_path_of(rel)
        refs, test_children = parse_file(text, mp)
        parsed[rel] = refs
        for child in test_children:
            test_files.add(tuple(mp + [child]))

    def is_test_file(mp):
        return any(tuple(mp[:k]) in test_files for k in range(1, len(mp) + 1))

    edges = collections.defaultdict(list)
    for rel in sorted(parsed):
        mp = module_path_of(rel)
        if not mp:
            continue  # the crate root is the facade, not a node
        file_is_test = is_test_file(mp)
        if file_is_test and not include_tests:
            continue
        lines = texts[rel].split("\n")
        src_label = os.path.join(src, rel)
        for kind, target, line, in_test in parsed[rel]:
            if in_test and not include_tests:
                continue
            if kind == "module" or target in modules:
                to = target
            else:
                to = root.get(target)
                if to not in modules:
                    continue
            if to == mp[0]:
                continue
            text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
            edges[(mp[0], to)].append((src_label, line, text))
    return edges, modules


def strongly_connected(nodes, edges):
    """Tarjan's algorithm, iterative; returns components with more than one node."""
    graph = collections.defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index = {}
    low = {}
    stack = []
    on_stack = set()
    result = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    result.append(sorted(comp))
    return sorted(result)


def report(src, edges, modules, show_edges, out):
    """Print the cycles of one crate; return how many there are."""
    comps = strongly_connected(modules, edges)
    if show_edges:
        out.write(f"{src}: module graph\n")
        by_from = collections.defaultdict(list)
        for a, b in sorted(edges):
            by_from[a].append(b)
        for a in sorted(by_from):
            out.write(f"  {a} -> {' '.join(by_from[a])}\n")
    if not comps:
        out.write(f"{src}: no cycle between top-level modules ({len(modules)} modules)\n")
        return 0
    out.write(f"{src}: {len(comps)} cycle(s) between top-level modules\n")
    for k, comp in enumerate(comps, 1):
        out.write(f"cycle {k}: {' '.join(comp)}\n")
        members = set(comp)
        for a, b in sorted(edges):
            if a in members and b in members:
                refs = edges[(a, b)]
                f, line, text = refs[0]
                more = f" (+{len(refs) - 1} more)" if len(refs) > 1 else ""
                out.write(f"  {a} -> {b}: {f}:{line}: {text}{more}\n")
    return len(comps)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", nargs="*", help="crate src/ folders (default: repo-format/src tools/src)")
    parser.add_argument("--tests", action="store_true", help="count test-only code too")
    parser.add_argument("--edges", action="store_true", help="also print the whole module graph")
    parser.add_argument("--self-test", action="store_true", help="run the parser's unit tests")
    args = parser.parse_args(argv)
    if args.self_test:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(SelfTest)
        ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
        return 0 if ok else 1
    srcs = args.src
    if not srcs:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        srcs = [os.path.relpath(os.path.join(repo, d)) for d in ("repo-format/src", "tools/src")]
    cycles = 0
    for src in srcs:
        if not os.path.isdir(src):
            sys.stderr.write(f"{src}: not a directory\n")
            return 2
        edges, modules = scan_crate(src, include_tests=args.tests)
        cycles += report(src, edges, modules, args.edges, sys.stdout)
    return 1 if cycles else 0


# --------------------------------------------------------------------------------------
# Self-test: the parser on inline samples, and a whole crate in a temporary folder.


class SelfTest(unittest.TestCase):
    def targets(self, text, path=("a",), tests=False):
        refs, _ = parse_file(text, list(path))
        return sorted({(k, t) for k, t, _, in_test in refs if tests or not in_test})

    def test_crate_paths_and_use_groups(self):
        text = """
use crate::{b, c::{D, E}, self};
use crate::f::G;
fn x() { crate::h::run(); let _ = crate::i::J { k: 1 }; }
pub use crate::
    m::N;
"""
        self.assertEqual(
            self.targets(text),
            [("crate", "b"), ("crate", "c"), ("crate", "f"), ("crate", "h"), ("crate", "i"), ("crate", "m")],
        )

    def test_multiline_group_reports_each_line(self):
        text = "use crate::{\n    b::X,\n    c,\n};\n"
        refs, _ = parse_file(text, ["a"])
        self.assertEqual([(t, ln) for _, t, ln, _ in refs], [("b", 2), ("c", 3)])

    def test_comments_strings_chars_and_macros_are_ignored(self):
        text = r'''
// crate::b
/// [`crate::c`]
/* crate::d /* nested crate::e */ crate::f */
const S: &str = "crate::g \" crate::h";
const R: &str = r#"crate::i "quoted" crate::j"#;
const C: char = '"'; const Q: u8 = b'\''; fn l<'a>(x: &'a str) {}
macro_rules! m { () => { $crate::k::X } }
fn ok() { crate::z::y(); }
'''
        self.assertEqual(self.targets(text), [("crate", "z")])

    def test_super_resolves_through_files_and_inline_modules(self):
        # top-level file: super:: is the crate root
        self.assertEqual(self.targets("use super::b::X;", ("a",)), [("crate", "b")])
        self.assertEqual(self.targets("use super::{b, c::D};", ("a",)), [("crate", "b"), ("crate", "c")])
        # a child file: super:: stays in the same top-level module
        self.assertEqual(self.targets("use super::X;", ("a", "w")), [("module", "a")])
        # super::super from an inline module in a child file
        text = "mod inner { use super::super::Y; fn f() { super::super::super::q::Z; } }"
        self.assertEqual(self.targets(text, ("a", "w")), [("crate", "q"), ("module", "a")])
        # after the inline module closes, super:: means the file's parent again
        text = "mod inner { fn f() {} }\nuse super::r::S;"
        self.assertEqual(self.targets(text, ("a",)), [("crate", "r")])

    def test_cfg_test_items_are_test_only(self):
        text = """
use crate::b;
#[cfg(test)]
use crate::c::{D, E};
#[cfg(test)]
mod tests {
    use super::*;
    use crate::d;
    #[test]
    fn t() { crate::e::f(); }
}
#[cfg(test)]
pub(crate) fn helper() -> crate::g::H { todo() }
#[cfg(doc)]
use crate::i;
fn after() { crate::j::k(); }
"""
        self.assertEqual(self.targets(text), [("crate", "b"), ("crate", "j")])
        self.assertEqual(
            self.targets(text, tests=True),
            [("crate", "b"), ("crate", "c"), ("crate", "d"), ("crate", "e"), ("crate", "g"), ("crate", "i"), ("crate", "j"),
             ("module", "a")],  # `use super::*` in `mod tests`: the module itself
        )

    def test_cfg_test_field_and_let_end_at_their_comma(self):
        text = """
struct S {
    #[cfg(test)]
    file: crate::b::Weak<File>,
    other: crate::c::X,
}
fn f() {
    #[cfg(test)]
    let w = crate::d::g(1, 2);
    S { #[cfg(test)] file: w, other: crate::e::X }
}
"""
        self.assertEqual(self.targets(text), [("crate", "c"), ("crate", "e")])

    def test_cfg_test_mod_declaration_marks_the_file(self):
        _, children = parse_file("#[cfg(test)]\nmod tests;\n#[cfg(test)]\n#[path = \"x.rs\"]\npub(crate) mod testing;\nmod real;\n", ["a"])
        self.assertEqual(children, ["tests", "testing"])

    def test_root_names_map_reexports(self):
        names = root_names(
            "pub mod error;\npub use error::{Error, Result};\npub use id::BlobId;\n"
            "pub use dprepo_chunker as chunker;\npub use repo::{self, Repository as Repo};\n"
            "pub struct Cli;\npub const EXIT: u8 = 3;\n"
        )
        self.assertEqual(names["Error"], "error")
        self.assertEqual(names["Result"], "error")
        self.assertEqual(names["BlobId"], "id")
        self.assertEqual(names["Repo"], "repo")
        self.assertEqual(names["chunker"], "dprepo_chunker")
        self.assertIsNone(names["Cli"])
        self.assertIsNone(names["EXIT"])

    def test_whole_crate_cycle_and_exit_status(self):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "src")
            os.makedirs(os.path.join(src, "b"))
            os.makedirs(os.path.join(src, "bin"))
            files = {
                "lib.rs": "pub mod a;\npub mod b;\npub mod c;\nmod e;\npub use e::Error;\npub struct Cli;\n",
                "a.rs": "use crate::Error;\nuse crate::Cli;\npub fn f() { crate::b::g(); }\n",
                "b/mod.rs": "mod inner;\n#[cfg(test)]\nmod tests;\npub fn g() {}\n",
                "b/inner.rs": "use super::super::c::H;\n",
                "b/tests.rs": "use crate::a::f;\n",
                "c.rs": "pub struct H;\n#[cfg(test)]\nmod tests { use crate::a::f; }\n",
                "e.rs": "pub struct Error;\n",
                "bin/tool.rs": "use crate::a; fn main() {}\n",
            }
            for rel, text in files.items():
                with open(os.path.join(src, rel), "w") as fh:
                    fh.write(text)
            edges, modules = scan_crate(src)
            self.assertEqual(modules, {"a", "b", "c", "e"})
            self.assertEqual(sorted(edges), [("a", "b"), ("a", "e"), ("b", "c")])
            self.assertEqual(strongly_connected(modules, edges), [])
            self.assertEqual(edges[("b", "c")][0][1:], (1, "use super::super::c::H;"))
            edges, modules = scan_crate(src, include_tests=True)
            self.assertEqual(strongly_connected(modules, edges), [["a", "b", "c"]])
            out = _Sink()
            self.assertEqual(report(src, edges, modules, False, out), 1)
            self.assertIn("  b -> a: " + os.path.join(src, "b/tests.rs") + ":1: use crate::a::f;", out.text)
            self.assertEqual(main([src]), 0)
            self.assertEqual(main(["--tests", src]), 1)


class _Sink:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
