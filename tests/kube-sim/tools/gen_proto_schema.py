#!/usr/bin/env python3
"""Generates tests/kube-sim/src/proto/schema.rs: the protobuf wire schema (field tags and
wire kinds) of the Kubernetes kinds kube-sim serves, with each field's JSON name.

Facts come from two dependencies' sources: the tags and kinds from k8s-pb's prost
attributes, the JSON names from k8s-openapi's (v1_33) field tables. Run it again when
either crate is upgraded:

    python3 tests/kube-sim/tools/gen_proto_schema.py K8S_PB_SRC K8S_OPENAPI_SRC > tests/kube-sim/src/proto/schema.rs

where the arguments are the crates' `src` directories in the cargo registry.
"""
import os
import re
import sys

MODULES = [
    "api/core/v1", "api/batch/v1", "api/apps/v1", "api/rbac/v1", "api/coordination/v1",
    "api/storage/v1", "api/events/v1", "api/policy/v1", "api/scheduling/v1",
    "api/authorization/v1", "api/authentication/v1", "api/autoscaling/v1",
    "apimachinery/pkg/apis/meta/v1", "apimachinery/pkg/runtime", "apimachinery/pkg/api/resource",
    "apimachinery/pkg/util/intstr", "apiextensions_apiserver/pkg/apis/apiextensions/v1",
]

ATTR = re.compile(r'#\[prost\((?P<kind>[a-z0-9_]+)(?: = "(?P<mapk>[^"]+)")?(?:, (?P<label>optional|repeated|required))?(?:, [a-z_]+ = "[^"]*")*, tag = "(?P<tag>\d+)"\)\]')
FIELD = re.compile(r'pub (?:r#)?(?P<name>[a-z0-9_]+): (?P<ty>.+),$')


def resolve(module, ty):
    """The full name of the message type at the end of a Rust type expression."""
    ty = ty.strip().rstrip(" ,>")
    m = re.search(r'((?:super::)*)((?:[a-z_0-9]+::)*)([A-Z][A-Za-z0-9]*)\s*>*\s*$', ty)
    if not m:
        raise ValueError(ty)
    ups = m.group(1).count("super::")
    down = [p for p in m.group(2).split("::") if p]
    base = module.split("/")
    if ups:
        base = base[: len(base) - ups]
    return ".".join(base + down + [m.group(3)])


def parse_pb(src):
    messages = {}
    for mod in MODULES:
        path = os.path.join(src, mod, "mod.rs")
        text = open(path).read().splitlines()
        cur = None
        pending = None
        buf = ""
        for line in text:
            s = line.strip()
            if buf:
                buf += " " + s
                if not s.endswith(",") or buf.count("<") != buf.count(">"):
                    continue
                s, buf = buf.replace("< ", "<").replace(" >", ">"), ""
            elif pending and s.startswith("pub ") and not s.endswith(","):
                buf = s
                continue
            mm = re.match(r'pub struct ([A-Za-z0-9]+) \{', s)
            if mm:
                cur = mod.replace("/", ".") + "." + mm.group(1)
                messages[cur] = []
                continue
            if s == "}":
                cur = None
                continue
            a = ATTR.search(s)
            if a and cur:
                pending = a
                continue
            f = FIELD.match(s)
            if f and cur and pending:
                kind = pending.group("kind")
                label = pending.group("label") or ""
                entry = {"name": f.group("name"), "tag": int(pending.group("tag")), "repeated": label == "repeated"}
                ty = f.group("ty")
                if kind in ("btree_map", "map"):
                    k, v = [x.strip() for x in pending.group("mapk").split(",")]
                    entry["kind"] = "map"
                    entry["value"] = v
                    if v == "message":
                        if ">" not in ty: print("BAD", cur, repr(ty), file=sys.stderr); raise SystemExit(1)
                        inner = ty[ty.index("<") + 1 : ty.rindex(">")].rstrip(", ")
                        vt = inner.rsplit(",", 1)[1].strip()
                        entry["type"] = resolve(mod, vt)
                elif kind == "message":
                    entry["kind"] = "message"
                    entry["type"] = resolve(mod, ty)
                elif kind == "oneof":
                    pending = None
                    continue
                else:
                    entry["kind"] = kind
                messages[cur].append(entry)
                pending = None
    return messages


def parse_openapi(src):
    """(module.Type) -> {normalized rust field: json name}"""
    names = {}
    for mod in MODULES:
        d = os.path.join(src, "v1_33", mod)
        if not os.path.isdir(d):
            continue
        for fn in os.listdir(d):
            if not fn.endswith(".rs") or fn == "mod.rs":
                continue
            text = open(os.path.join(d, fn)).read()
            st = re.search(r'pub struct ([A-Za-z0-9]+)', text)
            if not st:
                continue
            fields = {}
            for j, r in re.findall(r'"([^"]+)" => Field::Key_([a-z0-9_]+),', text):
                fields[r.replace("_", "").lower()] = j
            names[mod.replace("/", ".") + "." + st.group(1)] = fields
    return names


def camel(n):
    parts = n.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def main():
    pb = parse_pb(sys.argv[1])
    oa = parse_openapi(sys.argv[2])
    out = []
    out.append("//! Generated by tools/gen_proto_schema.py from k8s-pb 0.9.0 (tags, wire kinds) and")
    out.append("//! k8s-openapi 0.29.0 v1_33 (JSON names). Do not edit by hand.")
    out.append("")
    out.append("use super::{Field, Kind, Message};")
    out.append("")
    out.append("/// Every message of the served groups.")
    out.append("pub static MESSAGES: &[Message] = &[")
    for name in sorted(pb):
        fields = pb[name]
        table = oa.get(name, {})
        out.append(f"    Message {{ name: {name!r}, fields: &[".replace("'", '"'))
        for f in fields:
            key = f["name"].replace("_", "").lower()
            json_name = table.get(key)
            if json_name is None:
                tyname = f.get("type", "").rsplit(".", 1)[-1]
                snake = re.sub(r'(?<!^)([A-Z])', r'_\1', tyname).lower()
                if table and f["kind"] == "message" and (snake == f["name"] or tyname == "ProbeHandler"):
                    # A Go struct embedded inline: its fields belong to the parent in JSON.
                    json_name = ""
                else:
                    json_name = camel(f["name"])
                if table: print(f"unresolved {name}.{f['name']} -> {json_name!r}", file=sys.stderr)
            kind = f["kind"]
            if kind == "map":
                v = f["value"]
                k = {"string": "Kind::MapString", "bytes": "Kind::MapBytes", "message": "Kind::MapMessage"}[v]
            else:
                k = {"string": "Kind::String", "int64": "Kind::Int64", "int32": "Kind::Int32", "bool": "Kind::Bool",
                     "bytes": "Kind::Bytes", "double": "Kind::Double", "message": "Kind::Message"}[kind]
            ty = f.get("type", "")
            out.append(f'        Field {{ tag: {f["tag"]}, json: "{json_name}", kind: {k}, repeated: {str(f["repeated"]).lower()}, message: "{ty}" }},')
        out.append("    ] },")
    out.append("];")
    print("\n".join(out))


main()
