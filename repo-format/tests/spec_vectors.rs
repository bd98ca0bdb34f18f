//! Checks the test vectors of SPEC.md ("Test vectors") against the code.
//!
//! The ```` ```test-vectors ```` block of SPEC.md holds `name = hex` lines. This test
//! recomputes every vector from the fixed inputs (through the crate's public API where
//! it offers a deterministic path, and by hand exactly as the spec describes where the
//! code draws a random nonce or salt), requires the block to hold exactly those names
//! and values, and then decodes each vector back with the crate's decoders.
//!
//! When a vector changes on purpose (a format change), run this test with
//! `-- --nocapture`: the mismatch message prints the whole block to paste into SPEC.md.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use dprepo_chunker::{Chunker, ChunkerParams};
use dprepo_repo_format::blob::{
    compress_payload, decode_blob, decode_delta_blob, encode_delta_blob, BlobType, DeltaBase,
    ENCODING_RAW, ENCODING_ZSTD_DELTA,
};
use dprepo_repo_format::content::Content;
use dprepo_repo_format::crypto::{
    Keys, MasterKey, CONTENT_ID_CONTEXT, ENCRYPTION_CONTEXT, NONCE_LEN,
};
use dprepo_repo_format::envelope::{header, open_file, FileType};
use dprepo_repo_format::file_meta::{
    encode_xattrs, hard_link_count, node_xattrs, Xattr, EXT_HARD_LINK, EXT_POSIX_ACLS, EXT_SPARSE,
    EXT_XATTRS,
};
use dprepo_repo_format::index::{IndexFile, IndexPack, INDEX_FILE_VERSION};
use dprepo_repo_format::key::{
    AccessKey, KdfParams, KeyFile, KeyKind, ACCESS_KEY_CONTEXT, KDF_ACCESS_KEY, KDF_ARGON2ID,
    KEY_FILE_VERSION, KEY_FILE_VERSION_ACCESS, SALT_LEN,
};
use dprepo_repo_format::pack::{
    decode_pack, PackBuilder, PackEntry, PackKind, DELTA_FLAG, PACK_HEADER_AAD, PACK_MAGIC,
    PACK_VERSION,
};
use dprepo_repo_format::tree::{Extension, Node, NodeKind, Special, Timestamp, Tree};
use dprepo_repo_format::BlobId;

/// Fixed inputs of the vectors (SPEC.md, "Test vectors", inputs table).
const PASSWORD: &[u8] = b"password";
const KEY_KDF: KdfParams = KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};
const KEY_CREATED: i64 = 1_700_000_000;
/// Plaintext of the delta blob vector, stored against the blob `"hello world"`.
const DELTA_PLAINTEXT: &[u8] = b"hello world, hello world!";
const KEY_HOSTNAME: &str = "host";
const KEY_USERNAME: &str = "user";
const CHUNKER_INPUT_CONTEXT: &[u8] = b"dprepo chunker test vector";
const CHUNKER_INPUT_LEN: usize = 256 * 1024;
/// Explicit sizes rather than a preset: presets may change, the vector may not.
const CHUNKER_PARAMS: ChunkerParams = ChunkerParams {
    min_size: 4096,
    avg_size: 16384,
    max_size: 65536,
};

/// `start, start + 1, ...` (wrapping), `N` bytes.
fn counting<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn master_bytes() -> [u8; 32] {
    counting(0x00)
}
fn nonce_blob() -> [u8; NONCE_LEN] {
    counting(0x20)
}
fn nonce_pack_header() -> [u8; NONCE_LEN] {
    counting(0x38)
}
fn nonce_index() -> [u8; NONCE_LEN] {
    counting(0x50)
}
fn nonce_key() -> [u8; NONCE_LEN] {
    counting(0x68)
}
fn key_salt() -> [u8; SALT_LEN] {
    counting(0x80)
}

fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes(master_bytes()))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(name: &str, s: &str) -> Vec<u8> {
    assert!(s.len() & 1 == 0, "vector {name}: odd number of hex digits");
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .unwrap_or_else(|_| panic!("vector {name}: bad hex at {i}"))
        })
        .collect()
}

/// The `name = hex` lines of the ```` ```test-vectors ```` block of SPEC.md. Blank lines
/// and lines starting with `#` are ignored.
fn spec_vectors() -> BTreeMap<String, Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md");
    let spec = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut lines = spec.lines().skip_while(|l| l.trim() != "```test-vectors");
    assert!(
        lines.next().is_some(),
        "SPEC.md has no ```test-vectors block"
    );
    let mut out = BTreeMap::new();
    for line in lines.by_ref().take_while(|l| l.trim() != "```") {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hex) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("malformed vector line {line:?}"));
        let previous = out.insert(name.trim().to_string(), from_hex(name, hex.trim()));
        assert!(previous.is_none(), "vector {name} appears twice");
    }
    out
}

/// Intermediate values shared by the vectors.
struct Fixture {
    keys: Keys,
    id_hello: BlobId,
    id_empty: BlobId,
    blob_hello: Vec<u8>,
    entry: PackEntry,
    pack: Vec<u8>,
    pack_id: BlobId,
}

fn fixture() -> Fixture {
    let keys = keys();
    let id_hello = keys.content_id(b"hello world");
    let id_empty = keys.content_id(b"");
    let payload = raw_payload(b"hello world");
    let blob_hello = keys.seal_with_nonce(
        &nonce_blob(),
        &blob_aad(BlobType::Data, &id_hello),
        &payload,
    );
    let entry = PackEntry {
        blob_type: BlobType::Data,
        id: id_hello,
        offset: 0,
        stored_len: blob_hello.len() as u32,
        raw_len: 11,
        base: None,
    };
    let mut pack = blob_hello.clone();
    let sealed_header = keys.seal_with_nonce(
        &nonce_pack_header(),
        PACK_HEADER_AAD,
        &pack_header_plaintext(&[entry]),
    );
    pack.extend_from_slice(&sealed_header);
    pack.extend_from_slice(&(sealed_header.len() as u32).to_le_bytes());
    pack.push(PACK_VERSION);
    pack.extend_from_slice(PACK_MAGIC);
    let pack_id = BlobId::of_stored(&pack);
    Fixture {
        keys,
        id_hello,
        id_empty,
        blob_hello,
        entry,
        pack,
        pack_id,
    }
}

/// `encoding 0 || plaintext`, checked against the crate's own encoder at level 0.
fn raw_payload(plain: &[u8]) -> Vec<u8> {
    let mut payload = vec![ENCODING_RAW];
    payload.extend_from_slice(plain);
    assert_eq!(
        compress_payload(plain, 0),
        payload,
        "compress_payload at level 0 must store raw"
    );
    payload
}

/// `"dprepo blob" || type u8 || id[32]` (SPEC.md, "Blob encoding").
fn blob_aad(t: BlobType, id: &BlobId) -> Vec<u8> {
    let mut aad = b"dprepo blob".to_vec();
    aad.push(t as u8);
    aad.extend_from_slice(&id.0);
    aad
}

/// `type u8 || id[32] || stored_len u32 || raw_len u32`.
fn pack_header_entry(e: &PackEntry) -> Vec<u8> {
    let mut out = vec![e.blob_type as u8];
    out.extend_from_slice(&e.id.0);
    out.extend_from_slice(&e.stored_len.to_le_bytes());
    out.extend_from_slice(&e.raw_len.to_le_bytes());
    out
}

/// `"dprepo blob" || 0 || id[32] || base[32]` of a delta blob.
fn delta_aad(id: &BlobId, base: &BlobId) -> Vec<u8> {
    let mut aad = blob_aad(BlobType::Data, id);
    aad.extend_from_slice(&base.0);
    aad
}

/// The delta blob vector: the crate's payload (encoding 2, zstd frame at level 3 with
/// `"hello world"` as prefix) sealed with the fixed nonce, and its id.
fn delta_blob(f: &Fixture) -> (BlobId, Vec<u8>, Vec<u8>) {
    let id = f.keys.content_id(DELTA_PLAINTEXT);
    let base = DeltaBase {
        id: &f.id_hello,
        plaintext: b"hello world",
    };
    let sealed = encode_delta_blob(&f.keys, &id, DELTA_PLAINTEXT, base, 3).unwrap();
    let aad = delta_aad(&id, &f.id_hello);
    let payload = f.keys.open(&aad, &sealed, "delta").unwrap();
    assert_eq!(payload[0], ENCODING_ZSTD_DELTA);
    let stored = f.keys.seal_with_nonce(&nonce_blob(), &aad, &payload);
    (id, payload, stored)
}

/// A header entry of a delta blob: `type | DELTA_FLAG || id || stored_len || raw_len ||
/// base`.
fn delta_header_entry(id: &BlobId, stored_len: u32, base: &BlobId) -> Vec<u8> {
    let mut out = vec![BlobType::Data as u8 | DELTA_FLAG];
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&stored_len.to_le_bytes());
    out.extend_from_slice(&(DELTA_PLAINTEXT.len() as u32).to_le_bytes());
    out.extend_from_slice(&base.0);
    out
}

/// `count u32 || entry*`.
fn pack_header_plaintext(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = (entries.len() as u32).to_le_bytes().to_vec();
    for e in entries {
        out.extend_from_slice(&pack_header_entry(e));
    }
    out
}

fn small_tree(id_hello: BlobId) -> Tree {
    let stamp = Timestamp {
        sec: 1_700_000_000,
        nsec: 123_456_789,
    };
    let link_stamp = Timestamp {
        sec: 1_700_000_001,
        nsec: 0,
    };
    Tree {
        nodes: vec![
            Node {
                name: b"a.txt".to_vec(),
                kind: NodeKind::File(Content {
                    level: 0,
                    ids: vec![id_hello],
                }),
                mode: 0o100644,
                uid: 1000,
                gid: 1000,
                mtime: stamp,
                ctime: stamp,
                inode: 42,
                device: 2049,
                size: 11,
                extensions: Vec::new(),
            },
            Node {
                name: b"link".to_vec(),
                kind: NodeKind::Symlink(b"a.txt".to_vec()),
                mode: 0o120777,
                uid: 1000,
                gid: 1000,
                mtime: link_stamp,
                ctime: link_stamp,
                inode: 43,
                device: 2049,
                size: 5,
                extensions: Vec::new(),
            },
        ],
    }
}

/// The POSIX ACL of the special tree vector, as the kernel stores it: owner rw-, owning
/// group r--, others ---.
fn acl_value() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 0)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    v
}

/// A version 2 tree (SPEC.md sections 13, 13.2): a character device with an xattr, a
/// FIFO, and a hard-linked, sparse file with a POSIX ACL.
fn special_tree(id_hello: BlobId) -> Tree {
    let stamp = Timestamp {
        sec: 1_700_000_002,
        nsec: 0,
    };
    let node = |name: &[u8], kind, mode, inode, size, extensions| Node {
        name: name.to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: stamp,
        ctime: stamp,
        inode,
        device: 2049,
        size,
        extensions,
    };
    Tree {
        nodes: vec![
            node(
                b"dev",
                NodeKind::Special(Special::CharDevice(0x0103)),
                0o020666,
                44,
                0,
                vec![Extension {
                    tag: EXT_XATTRS,
                    data: encode_xattrs(&[Xattr {
                        name: b"user.k".to_vec(),
                        value: b"v".to_vec(),
                    }]),
                }],
            ),
            node(
                b"fifo",
                NodeKind::Special(Special::Fifo),
                0o010644,
                45,
                0,
                Vec::new(),
            ),
            node(
                b"linked",
                NodeKind::File(Content {
                    level: 0,
                    ids: vec![id_hello],
                }),
                0o100640,
                46,
                11,
                vec![
                    Extension {
                        tag: EXT_HARD_LINK,
                        data: 2u64.to_le_bytes().to_vec(),
                    },
                    Extension {
                        tag: EXT_SPARSE,
                        data: Vec::new(),
                    },
                    Extension {
                        tag: EXT_POSIX_ACLS,
                        data: encode_xattrs(&[Xattr {
                            name: b"system.posix_acl_access".to_vec(),
                            value: acl_value(),
                        }]),
                    },
                ],
            ),
        ],
    }
}

fn index_file(f: &Fixture) -> IndexFile {
    IndexFile {
        obsoletes: Vec::new(),
        packs: vec![IndexPack {
            id: f.pack_id,
            kind: PackKind::Data,
            entries: vec![f.entry],
        }],
    }
}

/// The access key's secret: bytes 0x90..=0xaf.
fn access_secret() -> [u8; 32] {
    std::array::from_fn(|i| 0x90 + i as u8)
}
const ACCESS_LABEL: &str = "label";

/// The access key file (version 2), built by hand like [`key_file`].
fn access_key_file() -> Vec<u8> {
    let mut out = header(FileType::Key, KEY_FILE_VERSION_ACCESS).to_vec();
    out.push(KDF_ACCESS_KEY);
    out.extend_from_slice(&[0u8; 12]);
    out.extend_from_slice(&key_salt());
    out.extend_from_slice(&KEY_CREATED.to_le_bytes());
    for s in [KEY_HOSTNAME, KEY_USERNAME, ACCESS_LABEL] {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut input = access_secret().to_vec();
    input.extend_from_slice(&key_salt());
    let kek = blake3::derive_key(ACCESS_KEY_CONTEXT, &input);
    let wrapped = XChaCha20Poly1305::new(&kek.into())
        .encrypt(
            XNonce::from_slice(&nonce_key()),
            Payload {
                msg: &master_bytes(),
                aad: &out,
            },
        )
        .unwrap();
    out.extend_from_slice(&nonce_key());
    out.extend_from_slice(&wrapped);
    out
}

/// The key file, built by hand: the crate draws a random salt and nonce and stamps the
/// current time, so it cannot produce a fixed one.
fn key_file() -> Vec<u8> {
    let mut out = header(FileType::Key, KEY_FILE_VERSION).to_vec();
    out.push(KDF_ARGON2ID);
    for v in [KEY_KDF.memory_kib, KEY_KDF.iterations, KEY_KDF.parallelism] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&key_salt());
    out.extend_from_slice(&KEY_CREATED.to_le_bytes());
    for s in [KEY_HOSTNAME, KEY_USERNAME] {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let params = argon2::Params::new(
        KEY_KDF.memory_kib,
        KEY_KDF.iterations,
        KEY_KDF.parallelism,
        Some(32),
    )
    .unwrap();
    let mut kek = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(PASSWORD, &key_salt(), &mut kek)
        .unwrap();
    let wrapped = XChaCha20Poly1305::new(&kek.into())
        .encrypt(
            XNonce::from_slice(&nonce_key()),
            Payload {
                msg: &master_bytes(),
                aad: &out,
            },
        )
        .unwrap();
    out.extend_from_slice(&nonce_key());
    out.extend_from_slice(&wrapped);
    out
}

fn chunker_input() -> Vec<u8> {
    let mut data = vec![0u8; CHUNKER_INPUT_LEN];
    blake3::Hasher::new()
        .update(CHUNKER_INPUT_CONTEXT)
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Every vector, computed from the fixed inputs.
fn compute() -> Vec<(&'static str, Vec<u8>)> {
    let f = fixture();
    let keys = &f.keys;
    let master = master_bytes();

    let tree = small_tree(f.id_hello).encode().unwrap();
    let tree_special = special_tree(f.id_hello).encode().unwrap();
    let chunk_list = Content {
        level: 0,
        ids: vec![f.id_hello, f.id_empty],
    }
    .encode_list();

    // Index body through the crate's encoder (random nonce), opened again to get the body;
    // then sealed with the fixed nonce and a raw payload.
    let sealed_by_code = index_file(&f).encode(keys);
    let (_, index_body) = open_file(
        keys,
        &sealed_by_code,
        FileType::Index,
        INDEX_FILE_VERSION,
        "index",
    )
    .unwrap();
    let index_header = header(FileType::Index, INDEX_FILE_VERSION);
    let mut index = index_header.to_vec();
    index.extend_from_slice(&keys.seal_with_nonce(
        &nonce_index(),
        &index_header,
        &raw_payload(&index_body),
    ));

    let delta = delta_blob(&f);

    let data = chunker_input();
    let chunk_lengths: Vec<u8> = Chunker::new(&data[..], CHUNKER_PARAMS)
        .unwrap()
        .flat_map(|c| (c.unwrap().len() as u32).to_le_bytes())
        .collect();

    vec![
        ("master_key", master.to_vec()),
        (
            "content_id_key",
            blake3::derive_key(CONTENT_ID_CONTEXT, &master).to_vec(),
        ),
        (
            "encryption_key",
            blake3::derive_key(ENCRYPTION_CONTEXT, &master).to_vec(),
        ),
        ("content_id_hello", f.id_hello.0.to_vec()),
        ("content_id_empty", f.id_empty.0.to_vec()),
        ("nonce_blob", nonce_blob().to_vec()),
        ("blob_aad_hello", blob_aad(BlobType::Data, &f.id_hello)),
        ("blob_payload_hello", raw_payload(b"hello world")),
        ("blob_hello", f.blob_hello.clone()),
        ("content_id_delta", delta.0 .0.to_vec()),
        ("blob_aad_delta", delta_aad(&delta.0, &f.id_hello)),
        ("blob_payload_delta", delta.1.clone()),
        ("blob_delta", delta.2.clone()),
        (
            "pack_header_entry_delta",
            delta_header_entry(&delta.0, delta.2.len() as u32, &f.id_hello),
        ),
        ("tree_small", tree.clone()),
        ("tree_small_id", keys.content_id(&tree).0.to_vec()),
        ("tree_special", tree_special),
        ("chunk_list", chunk_list),
        ("pack_header_entry", pack_header_entry(&f.entry)),
        ("pack_header_plaintext", pack_header_plaintext(&[f.entry])),
        ("nonce_pack_header", nonce_pack_header().to_vec()),
        ("pack", f.pack.clone()),
        ("pack_id", f.pack_id.0.to_vec()),
        ("index_body", index_body),
        ("nonce_index", nonce_index().to_vec()),
        ("index_file", index),
        ("key_salt", key_salt().to_vec()),
        ("nonce_key", nonce_key().to_vec()),
        ("key_file", key_file()),
        ("access_secret", access_secret().to_vec()),
        ("access_key_file", access_key_file()),
        (
            "access_key_file_id",
            BlobId::of_stored(&access_key_file()).0.to_vec(),
        ),
        ("chunk_lengths", chunk_lengths),
    ]
}

#[test]
fn spec_vectors_match_the_code() {
    let computed = compute();
    let spec = spec_vectors();
    let block: String = computed
        .iter()
        .map(|(n, v)| format!("{n} = {}\n", to_hex(v)))
        .collect();
    let expected: BTreeMap<String, Vec<u8>> = computed
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    for (name, value) in &expected {
        match spec.get(name) {
            None => panic!("SPEC.md lacks vector {name}; the computed block is:\n{block}"),
            Some(v) if v != value => {
                panic!("vector {name}: SPEC.md has {}, the code gives {}; the computed block is:\n{block}", to_hex(v), to_hex(value))
            }
            Some(_) => {}
        }
    }
    let extra: Vec<&String> = spec.keys().filter(|n| !expected.contains_key(*n)).collect();
    assert!(
        extra.is_empty(),
        "SPEC.md has vectors this test does not check: {extra:?}"
    );
}

#[test]
fn spec_vectors_decode_back() {
    let v = spec_vectors();
    let get = |name: &str| {
        v.get(name)
            .unwrap_or_else(|| panic!("SPEC.md lacks vector {name}"))
            .clone()
    };
    let keys = keys();

    // Subkeys: the content-id key is a BLAKE3 key, the encryption key an XChaCha20 key.
    let id_key: [u8; 32] = get("content_id_key").try_into().unwrap();
    let id_hello = BlobId(get("content_id_hello").try_into().unwrap());
    let id_empty = BlobId(get("content_id_empty").try_into().unwrap());
    assert_eq!(
        *blake3::keyed_hash(&id_key, b"hello world").as_bytes(),
        id_hello.0
    );
    assert_eq!(*blake3::keyed_hash(&id_key, b"").as_bytes(), id_empty.0);
    assert_eq!(keys.content_id(b"hello world"), id_hello);

    // Blob: nonce || ciphertext || tag, opened with the crate and with the raw cipher.
    let blob = get("blob_hello");
    assert_eq!(blob[..NONCE_LEN], get("nonce_blob")[..]);
    assert_eq!(
        decode_blob(&keys, BlobType::Data, &id_hello, &blob, 11).unwrap(),
        b"hello world"
    );
    assert!(
        decode_blob(&keys, BlobType::Tree, &id_hello, &blob, 11).is_err(),
        "type is bound as associated data"
    );
    assert!(
        decode_blob(&keys, BlobType::Data, &id_empty, &blob, 11).is_err(),
        "id is bound as associated data"
    );
    let enc_key: [u8; 32] = get("encryption_key").try_into().unwrap();
    let payload = XChaCha20Poly1305::new(&enc_key.into())
        .decrypt(
            XNonce::from_slice(&blob[..NONCE_LEN]),
            Payload {
                msg: &blob[NONCE_LEN..],
                aad: &get("blob_aad_hello"),
            },
        )
        .unwrap();
    assert_eq!(payload, get("blob_payload_hello"));

    // Delta blob: decodes against its base only, and through a version 2 pack whose
    // header holds the entry with its base.
    let id_delta = BlobId(get("content_id_delta").try_into().unwrap());
    assert_eq!(keys.content_id(DELTA_PLAINTEXT), id_delta);
    let delta = get("blob_delta");
    let len = DELTA_PLAINTEXT.len() as u64;
    let hello = DeltaBase {
        id: &id_hello,
        plaintext: b"hello world",
    };
    assert_eq!(
        decode_delta_blob(&keys, &id_delta, &delta, len, hello).unwrap(),
        DELTA_PLAINTEXT
    );
    assert!(decode_blob(&keys, BlobType::Data, &id_delta, &delta, len).is_err());
    let payload = keys.open(&get("blob_aad_delta"), &delta, "delta").unwrap();
    assert_eq!(payload, get("blob_payload_delta"));
    let mut builder = PackBuilder::new(PackKind::Data);
    builder.add_entry(BlobType::Data, id_delta, &delta, len as u32, Some(id_hello));
    let pack = builder.finish(&keys);
    let entries = decode_pack(&keys, &pack.bytes, "pack").unwrap();
    assert_eq!(entries[0].base, Some(id_hello));
    assert_eq!(
        delta_header_entry(&entries[0].id, entries[0].stored_len, &id_hello),
        get("pack_header_entry_delta")
    );

    // Tree and chunk list.
    let tree = Tree::decode(&get("tree_small"), "tree").unwrap();
    assert_eq!(tree, small_tree(id_hello));
    assert_eq!(
        keys.content_id(&get("tree_small")).0.to_vec(),
        get("tree_small_id")
    );
    let special = Tree::decode(&get("tree_special"), "tree").unwrap();
    assert_eq!(special, special_tree(id_hello));
    assert_eq!(
        get("tree_special")[0],
        2,
        "a tree with special files is version 2"
    );
    assert_eq!(hard_link_count(&special.nodes[2]), Some(2));
    assert_eq!(
        node_xattrs(&special.nodes[2], "linked").unwrap()[0].value,
        acl_value()
    );
    let list = Content::decode_list(&get("chunk_list"), 0, "chunk list").unwrap();
    assert_eq!(
        list,
        Content {
            level: 0,
            ids: vec![id_hello, id_empty]
        }
    );

    // Pack: the hand-built pack decodes to the entries the crate's builder records, and
    // the builder lays out the blob bytes identically.
    let pack = get("pack");
    assert_eq!(BlobId::of_stored(&pack).0.to_vec(), get("pack_id"));
    let entries = decode_pack(&keys, &pack, "pack").unwrap();
    let mut builder = PackBuilder::new(PackKind::Data);
    builder.add(BlobType::Data, id_hello, &blob, 11);
    let built = builder.finish(&keys);
    assert_eq!(entries, built.entries);
    assert_eq!(built.bytes[..blob.len()], blob[..]);
    assert_eq!(
        decode_pack(&keys, &built.bytes, "built pack").unwrap(),
        entries
    );
    assert_eq!(pack_header_entry(&entries[0]), get("pack_header_entry"));
    let e = entries[0];
    let stored = &pack[e.offset as usize..(e.offset + e.stored_len) as usize];
    assert_eq!(
        decode_blob(&keys, e.blob_type, &e.id, stored, u64::from(e.raw_len)).unwrap(),
        b"hello world"
    );
    let header_len =
        u32::from_le_bytes(pack[pack.len() - 12..pack.len() - 8].try_into().unwrap()) as usize;
    let sealed_header = &pack[pack.len() - 12 - header_len..pack.len() - 12];
    assert_eq!(sealed_header[..NONCE_LEN], get("nonce_pack_header")[..]);
    assert_eq!(
        keys.open(PACK_HEADER_AAD, sealed_header, "pack header")
            .unwrap(),
        get("pack_header_plaintext")
    );

    // Index file.
    let index = IndexFile::decode(&keys, &get("index_file"), "index").unwrap();
    assert_eq!(
        index,
        IndexFile::decode_body(&get("index_body"), 1, "index body").unwrap()
    );
    assert_eq!(index.packs.len(), 1);
    assert_eq!(index.packs[0].id.0.to_vec(), get("pack_id"));
    assert_eq!(index.packs[0].entries, entries);
    assert_eq!(get("index_file")[6..6 + NONCE_LEN], get("nonce_index")[..]);

    // Key file: opens with the password to the master key of every other vector.
    let key = KeyFile::decode(&get("key_file"), "key").unwrap();
    assert_eq!(
        (key.kdf, key.salt.to_vec(), key.created),
        (KEY_KDF, get("key_salt"), KEY_CREATED)
    );
    assert_eq!(
        (key.hostname.as_str(), key.username.as_str()),
        (KEY_HOSTNAME, KEY_USERNAME)
    );
    let master = key
        .open(PASSWORD)
        .unwrap()
        .expect("the password opens the key file");
    assert_eq!(Keys::derive(&master).content_id(b"hello world"), id_hello);
    assert!(key.open(b"wrong password").unwrap().is_none());

    // Access key file: opens with the access key made of its id and the secret.
    let file = KeyFile::decode(&get("access_key_file"), "key").unwrap();
    assert_eq!(
        (file.kind, file.label.as_str(), file.created),
        (KeyKind::Access, ACCESS_LABEL, KEY_CREATED)
    );
    let text = format!(
        "dprepo-ak1-{}-{}",
        to_hex(&get("access_key_file_id")),
        to_hex(&get("access_secret"))
    );
    let access = AccessKey::parse(text.as_bytes()).unwrap();
    let master = file.open_access(&access).expect("the access key opens it");
    assert_eq!(Keys::derive(&master).content_id(b"hello world"), id_hello);

    // Chunk lengths: non-empty, within bounds, summing to the input.
    let lengths: Vec<u32> = get("chunk_lengths")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        lengths.iter().map(|&l| l as usize).sum::<usize>(),
        CHUNKER_INPUT_LEN
    );
    let p = CHUNKER_PARAMS;
    assert!(lengths.iter().all(|&l| l <= p.max_size));
    assert!(lengths[..lengths.len() - 1]
        .iter()
        .all(|&l| l >= p.min_size));
}
