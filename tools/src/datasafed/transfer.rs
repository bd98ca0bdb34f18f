//! `push` and `pull`.

use super::*;

pub(super) async fn push(cli: &DatasafedCli, a: &PushArgs) -> Result<()> {
    let codec = a.compress.as_deref().map(codec).transpose()?;
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("push to {:?}", a.rpath);
    if path == "/" {
        bail!("{what}: is a directory");
    }
    let reader: Box<dyn Read + Send> = if a.lpath.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&a.lpath).with_context(|| format!("open {}", a.lpath.display()))?,
        )
    };
    let repo = open(&ctx, true, Blobs::OnDemand)
        .await?
        .context("no repository")?;
    // One listing (no namespace built): conflicts, the delta parent and the versions
    // this push replaces all come from it, and only the entries of this path are kept
    // (a WAL archive has 100,000, which a push kept in memory).
    let below = format!("{path}/");
    let mut is_dir = false;
    let mut file_above: Option<String> = None;
    let mut parent = crate::ds_parent::ParentPick::new(&path);
    let files = ds_files::load_with(&repo, |e| {
        if (e.kind == Kind::Dir && e.path == path)
            || (e.kind != Kind::Other && e.path.starts_with(&below))
        {
            is_dir = true;
        }
        if e.kind == Kind::File
            && is_within(&path, e.path)
            && e.path != path
            && file_above.as_ref().is_none_or(|f| f.len() < e.path.len())
        {
            file_above = Some(e.path.to_string());
        }
        parent.offer(&e);
        e.kind == Kind::File && e.path == path
    })
    .await?;
    if is_dir {
        bail!("{what}: is a directory");
    }
    if let Some(dir) = file_above {
        bail!("{what}: {} is a file", relative(&ctx, &dir));
    }
    let codec_name = codec.map_or("none", |c| c.name);
    let tags = vec![
        TAG.to_string(),
        format!("{PATH_TAG}{path}"),
        format!("{CODEC_TAG}{codec_name}"),
    ];
    let parent = parent
        .id()
        .map_or(ParentChoice::None, ParentChoice::IfPresent);
    let options = BackupOptions::default().with_tags(tags).with_parent(parent);
    let source = BackupSource::Stream {
        name: basename(&path).to_string(),
        reader,
    };
    let outcome = backup(&repo, source, options, Arc::new(BackupProgress::default())).await;
    warn_index_notes(&repo);
    let outcome = outcome.with_context(|| what.clone())?;
    let new = outcome.snapshot;
    // Replace: older snapshots of this path go only after the new one is stored. A
    // concurrent push of the same path stored after the listing above is not seen: of
    // the two, the newest is the file (SPEC.md section 14), and the next push of the
    // path or `rm` removes the other.
    let older: Vec<BlobId> = files
        .entries
        .iter()
        .chain(&files.uncovered)
        .filter(|s| {
            s.kind == Kind::File && s.path == path && (s.time, s.id) < (new.manifest.time, new.id)
        })
        .map(|s| s.id)
        .collect();
    forget_snapshots(&repo, &older)
        .await
        .with_context(|| format!("{what}: removing the replaced versions"))?;
    // Derived data: failing to record it costs the next call some manifest reads.
    let _ = files.keep(&repo, &[ds_files::entry_of(&new)], &older).await;
    Ok(())
}

/// The proper ancestors of a `/`-rooted path, nearest first (without `/`).
pub(super) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(parent(path)), |&p| {
        if p == "/" {
            None
        } else {
            Some(parent(p))
        }
    })
    .filter(|p| *p != "/")
}

pub(super) async fn pull(cli: &DatasafedCli, a: &PullArgs) -> Result<()> {
    let decompress = a.decompress.as_deref().map(codec).transpose()?;
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("pull {:?}", a.rpath);
    let repo = open(&ctx, false, Blobs::OnDemand).await?;
    // Only this path's snapshots are kept (no namespace of every file built).
    let below = format!("{path}/");
    let mut is_dir = path == "/";
    let files = match repo.as_ref() {
        Some(repo) => {
            let files = ds_files::load_with(repo, |e| {
                if (e.kind == Kind::Dir && e.path == path)
                    || (e.kind != Kind::Other && e.path.starts_with(&below))
                {
                    is_dir = true;
                }
                e.kind == Kind::File && e.path == path
            })
            .await?;
            // Derived data: a call that cannot write still answers.
            let _ = files.keep(repo, &[], &[]).await;
            Some(files)
        }
        None => None,
    };
    let newest = files
        .iter()
        .flat_map(|f| f.entries.iter().chain(&f.uncovered))
        .filter(|e| e.kind == Kind::File && e.path == path)
        .max_by_key(|e| (e.time, e.id));
    let (Some(repo), Some(file)) = (repo.as_ref(), newest) else {
        if is_dir {
            bail!("{what}: is a directory not a file");
        }
        bail!("{what}: object not found");
    };
    let recorded = recorded_codec(file)?;
    // What the stored raw bytes go through on their way out.
    enum Transform {
        Raw,
        Compress(Codec),
        Decompress(Codec),
    }
    let transform = match (recorded, decompress) {
        (None, None) => Transform::Raw,
        (Some(c), None) => Transform::Compress(c),
        (Some(c), Some(d)) if c.format == d.format => Transform::Raw,
        (Some(c), Some(d)) => bail!(
            "{what}: it was pushed with -z {}, which -d {} cannot decompress",
            c.name,
            d.name
        ),
        (None, Some(d)) => Transform::Decompress(d),
    };
    let out: Box<dyn Write + Send> = if a.lpath.as_os_str() == "-" {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        ))
    } else {
        let lpath = std::path::absolute(&a.lpath)
            .with_context(|| format!("invalid local path {:?}", a.lpath))?;
        if a.lpath.as_os_str().is_empty() || a.lpath.to_string_lossy().ends_with('/') {
            bail!("invalid local path {:?}", a.lpath.display().to_string());
        }
        if let Some(dir) = lpath.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        }
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&lpath).with_context(|| format!("open {}", lpath.display()))?,
        ))
    };
    let tree = file.tree;
    let name = basename(&path).as_bytes().to_vec();
    let result = match transform {
        Transform::Raw => {
            let mut out = out;
            dump(repo, &tree, &name, &mut out)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
        Transform::Compress(c) => {
            let mut enc = EncoderWriter(encoder(c, out)?);
            match dump(repo, &tree, &name, &mut enc).await {
                Ok(_) => enc.0.finish_stream().context("writing the output"),
                Err(e) => Err(e.into()),
            }
        }
        Transform::Decompress(d) => decompress_into(repo, &tree, &name, d, out).await,
    };
    warn_index_notes(repo);
    result.with_context(|| what)
}

/// Stream the stored bytes through a `d` decoder into `out`: the engine writes into a
/// bounded pipe, a thread decodes from it.
pub(super) async fn decompress_into(
    repo: &Repository,
    tree: &BlobId,
    name: &[u8],
    d: Codec,
    mut out: Box<dyn Write + Send>,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let worker = std::thread::spawn(move || -> Result<()> {
        let mut dec = decoder(
            d,
            Box::new(PipeReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            }),
        )?;
        std::io::copy(&mut dec, &mut out)
            .map_err(|e| anyhow!("decompressing with {}: {e}", d.name))?;
        out.flush().context("writing the output")?;
        Ok(())
    });
    let mut pipe = PipeWriter { tx: Some(tx) };
    let dumped = dump(repo, tree, name, &mut pipe).await;
    drop(pipe); // end of input for the decoder
    let decoded = worker
        .join()
        .map_err(|_| anyhow!("the decompression thread panicked"))?;
    // A decoder failure closes the pipe, which the engine then reports as a broken
    // pipe: the decoder's error is the one that explains what happened.
    decoded?;
    dumped?;
    Ok(())
}

pub(super) struct PipeWriter {
    pub(super) tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let tx = self.tx.as_ref().ok_or(std::io::ErrorKind::BrokenPipe)?;
        tx.send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) struct PipeReader {
    pub(super) rx: std::sync::mpsc::Receiver<Vec<u8>>,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
