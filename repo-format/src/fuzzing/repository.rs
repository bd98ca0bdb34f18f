//! The fuzz repository: a tiny real repository (two streams, a tar stream backed up twice
//! with page deltas) that [`fuzz_repository`] damages file by file, and the tar streams
//! and chunkers the seed generator shares with it.

use super::*;

/// The tiny repository [`fuzz_repository`] damages: its files in a fixed order, and the
/// streams its snapshots hold.
#[derive(Debug)]
pub struct FuzzRepository {
    /// Storage name and bytes of every file, in creation order (config and key first).
    pub files: Vec<(String, Vec<u8>)>,
    /// Name and content of every stream backed up, in order; each is one snapshot,
    /// stream `i` taken at [`stream_time`]`(i)`. [`FUZZ_TAR_STREAM`] appears twice.
    pub streams: Vec<(String, Vec<u8>)>,
}

/// Snapshot time of stream `i` of the fuzz repository: 2023-11-14 plus `i` seconds.
pub fn stream_time(i: usize) -> chrono::DateTime<chrono::Utc> {
    let secs = 1_700_000_000i64.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or(chrono::DateTime::UNIX_EPOCH)
}

/// Stream chunker of the fuzz repository: the smallest chunks FastCDC allows, so a
/// 32 KiB stream has more than 64 chunks and its content needs a chunk-list blob.
pub fn fuzz_stream_chunker() -> ChunkerParams {
    ChunkerParams::new(64, 256, 1024).unwrap_or(ChunkerParams::SMALL)
}

/// Create a repository in `storage` whose master key is [`FUZZ_MASTER_KEY`] and whose
/// only key file opens with [`FUZZ_PASSWORD`] at [`FUZZ_KDF`], and open it.
///
/// # Errors
/// Storage errors; [`Error::InvalidArgument`] for invalid `options`.
pub async fn create_fuzz_repository(
    storage: Arc<dyn Storage>,
    options: &InitOptions,
) -> Result<Repository> {
    let master = MasterKey::from_bytes(FUZZ_MASTER_KEY);
    let key = KeyFile::create(&master, FUZZ_PASSWORD, FUZZ_KDF, "fuzz-host", "fuzz-user")?;
    let key_name = crate::layout::key_file(&BlobId::of_stored(&key));
    storage.create(&key_name, &key).await?;
    let mut config = Config::new(options.chunker, options.stream_chunker);
    config.pack_size = options.pack_size;
    config.compression_level = options.compression_level;
    config.created = chrono::DateTime::UNIX_EPOCH;
    config
        .validate()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    storage
        .create(CONFIG_NAME, &config.encode(fuzz_keys()))
        .await?;
    Repository::open(storage, FUZZ_PASSWORD).await
}

/// The two streams of the fuzz repository: 32 KiB (over 64 chunks: a chunk list) and
/// 8 KiB sharing its first 6 KiB (deduplicated, content inline in the tree).
pub fn fuzz_streams() -> Vec<(String, Vec<u8>)> {
    let mut first = pseudo_random_bytes(1, 16 << 10);
    first.extend(b"dprepo fuzzing stream ".iter().cycle().take(16 << 10));
    let mut second = first[..6 << 10].to_vec();
    second.extend(pseudo_random_bytes(2, 2 << 10));
    vec![("first.bin".into(), first), ("second.bin".into(), second)]
}

/// Name of the tar stream of the fuzz repositories: [`fuzz_tar_streams`] are two backups
/// of it, the second with the first as parent.
pub const FUZZ_TAR_STREAM: &str = "db.tar";

/// Chunker of the tar stream: small chunks for its header runs, and a maximum of one
/// page, the least with which a stream is cut tar-aware (SPEC.md section 11.1).
pub fn fuzz_tar_chunker() -> ChunkerParams {
    ChunkerParams::new(64, 256, PAGE_SIZE).unwrap_or(ChunkerParams::SMALL)
}

/// Size of a tar block.
const TAR_BLOCK: usize = 512;
// Fields of a ustar header, each after the previous one (name, mode, uid, gid, size,
// mtime, chksum, typeflag, linkname, magic and version).
const TAR_NAME_LEN: usize = 100;
const TAR_MODE_AT: usize = TAR_NAME_LEN;
const TAR_UID_AT: usize = TAR_MODE_AT + 8;
const TAR_GID_AT: usize = TAR_UID_AT + 8;
const TAR_SIZE_AT: usize = TAR_GID_AT + 8;
const TAR_MTIME_AT: usize = TAR_SIZE_AT + 12;
const TAR_CHKSUM_AT: usize = TAR_MTIME_AT + 12;
const TAR_TYPEFLAG_AT: usize = TAR_CHKSUM_AT + 8;
const TAR_MAGIC_AT: usize = TAR_TYPEFLAG_AT + 1 + 100;
const _: () = assert!(TAR_SIZE_AT == 124 && TAR_MAGIC_AT == 257);

/// The ustar header of regular file `name` (under 100 bytes) of `size` bytes, with
/// fixed mode, owner and mtime (1 700 000 000, octal).
fn ustar_header(name: &str, size: usize) -> [u8; TAR_BLOCK] {
    let mut h = [0u8; TAR_BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[TAR_MODE_AT..TAR_UID_AT].copy_from_slice(b"0000644\0");
    h[TAR_UID_AT..TAR_GID_AT].copy_from_slice(b"0000000\0");
    h[TAR_GID_AT..TAR_SIZE_AT].copy_from_slice(b"0000000\0");
    h[TAR_SIZE_AT..TAR_MTIME_AT].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[TAR_MTIME_AT..TAR_CHKSUM_AT].copy_from_slice(b"14524237000\0");
    h[TAR_TYPEFLAG_AT] = b'0';
    h[TAR_MAGIC_AT..TAR_MAGIC_AT + 8].copy_from_slice(b"ustar\x0000");
    // The checksum is the byte sum with its own field read as spaces.
    h[TAR_CHKSUM_AT..TAR_TYPEFLAG_AT].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[TAR_CHKSUM_AT..TAR_TYPEFLAG_AT].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A ustar archive of `members` (name and content), with its two zero end blocks.
fn ustar_archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        out.extend_from_slice(&ustar_header(name, data.len()));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(TAR_BLOCK) * TAR_BLOCK, 0);
    }
    out.resize(out.len() + 2 * TAR_BLOCK, 0);
    out
}

/// Two versions of a tiny database directory as tar, for [`FUZZ_TAR_STREAM`]: members
/// `PG_VERSION` (not a page multiple: cut content-defined), `base/5/1259` (2 pages, page
/// 0 is [`fuzz_delta_base`]) and `base/5/16397` (3 pages). The second changes 8 bytes in
/// page 0 of `1259` and pages 1 and 2 of `16397`, and adds a fourth page to `16397`;
/// backed up after the first, it stores those three pages as deltas (against the first
/// one's pages) and the new page in full.
pub fn fuzz_tar_streams() -> [Vec<u8>; 2] {
    let page = PAGE_SIZE as usize;
    let mut rel_1259 = fuzz_delta_base().plaintext.clone();
    rel_1259.extend(pseudo_random_bytes(1260, page));
    let rel_16397 = pseudo_random_bytes(16397, 3 * page);
    let first = ustar_archive(&[
        ("PG_VERSION", b"15\n"),
        ("base/5/1259", &rel_1259),
        ("base/5/16397", &rel_16397),
    ]);
    // A few rows of each changed page: 8 bytes at different places of the page.
    let touch = |data: &mut Vec<u8>, page_no: usize, at: usize| {
        data[page_no * page + at..][..8].copy_from_slice(b"changed!");
    };
    let (mut rel_1259, mut rel_16397) = (rel_1259, rel_16397);
    touch(&mut rel_1259, 0, 100);
    touch(&mut rel_16397, 1, 4000);
    touch(&mut rel_16397, 2, 8000);
    rel_16397.extend(pseudo_random_bytes(16398, page));
    let second = ustar_archive(&[
        ("PG_VERSION", b"15\n"),
        ("base/5/1259", &rel_1259),
        ("base/5/16397", &rel_16397),
    ]);
    [first, second]
}

async fn build_fuzz_repository() -> Result<FuzzRepository> {
    let storage = MemoryStorage::new();
    let options = InitOptions::default()
        .with_kdf(FUZZ_KDF)
        .with_stream_chunker(fuzz_stream_chunker())
        .with_pack_size(crate::config::MIN_PACK_SIZE);
    let repo = create_fuzz_repository(Arc::new(storage.clone()), &options).await?;
    // Creation order fixes file positions: names hash bytes that hold random nonces, so
    // sorting by name would differ from one process to the next.
    let mut order: Vec<(usize, String)> = Vec::new();
    let record = |step: usize, order: &mut Vec<(usize, String)>| {
        let seen: BTreeSet<String> = order.iter().map(|(_, n)| n.clone()).collect();
        for name in storage.names() {
            if !seen.contains(&name) {
                order.push((step, name));
            }
        }
    };
    record(0, &mut order);
    // The tar stream twice: the second backup stores deltas (a version 2 pack and index
    // file) whose bases are in the first one's pack, so reads follow bases.
    let mut streams = fuzz_streams();
    streams.extend(fuzz_tar_streams().map(|t| (FUZZ_TAR_STREAM.to_string(), t)));
    for (i, (name, data)) in streams.iter().enumerate() {
        let mut options = BackupOptions::default().with_hostname("fuzz-host");
        options = if name == FUZZ_TAR_STREAM {
            options
                .with_chunker(fuzz_tar_chunker())
                .with_parent(ParentChoice::Auto)
        } else {
            options.with_parent(ParentChoice::None)
        };
        options.time = Some(stream_time(i));
        backup(
            &repo,
            BackupSource::Stream {
                name: name.clone(),
                reader: Box::new(std::io::Cursor::new(data.clone())),
            },
            options,
            Arc::new(BackupProgress::default()),
        )
        .await?;
        record(i + 1, &mut order);
    }
    let dir = |name: &str| name.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let mut files = Vec::new();
    for (step, name) in order {
        if let Ok(bytes) = storage.get(&name).await {
            files.push((step, dir(&name), bytes.len(), name, bytes));
        }
    }
    files.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    Ok(FuzzRepository {
        files: files.into_iter().map(|f| (f.3, f.4)).collect(),
        streams,
    })
}

/// The repository [`fuzz_repository`] damages, built once per process.
///
/// # Panics
/// If it cannot be built (a bug: it is an ordinary backup into memory).
pub fn fuzz_repository_base() -> &'static FuzzRepository {
    static BASE: OnceLock<FuzzRepository> = OnceLock::new();
    BASE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(build_fuzz_repository())
            .expect("building the fuzz repository")
    })
}

/// Length of one mutation record of [`fuzz_repository`].
pub const MUTATION_LEN: usize = 5;
/// Most mutations applied per input.
pub const MAX_MUTATIONS: usize = 32;

/// Resolve a mutation position: bit 15 set counts from the end, so headers and trailers
/// are both in reach of a 16-bit position.
fn position(pos: u16, len: usize) -> usize {
    let p = usize::from(pos & 0x7fff);
    if pos & 0x8000 != 0 {
        len.saturating_sub(1 + p)
    } else {
        p.min(len.saturating_sub(1))
    }
}

/// Apply the mutation records of `data` to `files`; returns how many changed something.
///
/// Record: `op u8 || file u8 || position u16 || value u8`, file index modulo the file
/// count. Ops (modulo 6): xor a byte with `value` (0 counts as 0x80), truncate at the
/// position, delete the file, replace it by a copy of file `value`, insert `value`,
/// write `value` as a u32 at the position.
pub fn apply_mutations(files: &mut [Option<Vec<u8>>], data: &[u8]) -> usize {
    let n = files.len();
    let mut applied = 0;
    for rec in data.chunks_exact(MUTATION_LEN).take(MAX_MUTATIONS) {
        let (op, file, value) = (rec[0] % 6, usize::from(rec[1]) % n, rec[4]);
        let pos = u16::from_le_bytes([rec[2], rec[3]]);
        let source = if op == 3 {
            files[usize::from(value) % n].clone()
        } else {
            None
        };
        let Some(bytes) = files[file].as_mut() else {
            continue;
        };
        let at = position(pos, bytes.len());
        match op {
            0 if !bytes.is_empty() => bytes[at] ^= if value == 0 { 0x80 } else { value },
            1 => bytes.truncate(at),
            2 => files[file] = None,
            3 => files[file] = source,
            4 => bytes.insert(at.min(bytes.len()), value),
            5 => {
                let v = u32::from(value).to_le_bytes();
                for (i, b) in v.iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
            _ => continue,
        }
        applied += 1;
    }
    applied
}

/// A writer that refuses to grow past a capacity.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other(
                "dump output exceeds the original stream",
            ));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Panic on errors that only a bug can cause (a panicked task, a poisoned lock).
fn check_error(e: &Error, during: &str) {
    if let Error::Internal(msg) = e {
        panic!("internal error during {during}: {msg}");
    }
}

async fn read_damaged_repository(storage: MemoryStorage, base: &FuzzRepository, pristine: bool) {
    let repo = match Repository::open(Arc::new(storage), FUZZ_PASSWORD).await {
        Ok(r) => r,
        Err(e) => {
            assert!(
                !pristine,
                "the undamaged fuzz repository does not open: {e}"
            );
            return check_error(&e, "Repository::open");
        }
    };
    let snapshots = match repo.list_snapshots().await {
        Ok(s) => s,
        Err(e) => {
            assert!(!pristine, "listing snapshots failed: {e}");
            return check_error(&e, "list_snapshots");
        }
    };
    if pristine {
        assert_eq!(snapshots.len(), base.streams.len(), "snapshot count");
    }
    for snap in snapshots {
        let name = snap.manifest.stdin_name.clone().unwrap_or_default();
        // A stream name may have several snapshots; the time tells which one this is.
        let time = snap.manifest.time;
        let found = (base.streams.iter().enumerate())
            .find(|(i, (n, _))| *n == name && stream_time(*i) == time);
        let Some((_, (_, expected))) = found else {
            panic!(
                "a snapshot decoded from damaged storage names stream {name:?} at {time}, \
                 which was never backed up"
            );
        };
        let root = snap.manifest.tree;
        if let Err(e) = repo.find_node(&root, name.as_bytes()).await {
            assert!(!pristine, "find_node failed: {e}");
            check_error(&e, "find_node");
        }
        let mut out = CappedWriter {
            buf: Vec::new(),
            cap: expected.len(),
        };
        match dump(&repo, &root, name.as_bytes(), &mut out).await {
            Ok(n) => {
                assert_eq!(n as usize, out.buf.len(), "dump reports a wrong length");
                assert!(
                    out.buf == *expected,
                    "dump of {name} from damaged storage returned wrong bytes without an error"
                );
            }
            Err(e) => {
                assert!(!pristine, "dump of the undamaged repository failed: {e}");
                check_error(&e, "dump");
            }
        }
    }
}

/// The whole read path on damaged storage: the input is a list of mutation records
/// (see [`apply_mutations`]) applied to the files of [`fuzz_repository_base`]; then
/// `Repository::open`, `list_snapshots`, and `find_node` and `dump` of every snapshot.
/// Every step may fail, but a dump that succeeds must return exactly the stream that
/// was backed up, and the undamaged repository must read back completely.
pub fn fuzz_repository(data: &[u8]) {
    let base = fuzz_repository_base();
    let mut files: Vec<Option<Vec<u8>>> = base.files.iter().map(|(_, b)| Some(b.clone())).collect();
    let pristine = apply_mutations(&mut files, data) == 0;
    let storage = MemoryStorage::new();
    for ((name, _), bytes) in base.files.iter().zip(files) {
        let Some(bytes) = bytes else { continue };
        // Bound the work: a key file may ask for seconds of Argon2 (by design).
        if name.starts_with(KEYS_DIR) {
            if let Ok(key) = KeyFile::decode(&bytes, name) {
                if key.kdf.memory_kib > MAX_FUZZ_KDF_MEMORY_KIB
                    || key.kdf.iterations > MAX_FUZZ_KDF_ITERATIONS
                {
                    return;
                }
            }
        }
        storage.raw_put(name.clone(), bytes);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(read_damaged_repository(storage, base, pristine));
}
