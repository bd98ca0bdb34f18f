//! `rm`, `rmdir`, `mkdir`, and dprepo's `access-key`.

use super::*;

pub(super) async fn access_key(cli: &DatasafedCli, a: &AccessKeyArgs) -> Result<()> {
    let text = std::fs::read(&a.secret_file)
        .with_context(|| format!("reading the secret file {}", a.secret_file.display()))?;
    let secret = std::str::from_utf8(text.trim_ascii())
        .ok()
        .and_then(|hex| BlobId::from_hex(hex).ok())
        .with_context(|| {
            format!(
                "{}: the secret must be 64 hex digits",
                a.secret_file.display()
            )
        })?;
    let ctx = env(cli)?;
    let Some(repo) = open(&ctx, false, Blobs::Never).await? else {
        bail!(
            "no repository at {}: push something first (with a password, which creates it)",
            ctx.storage.location()
        );
    };
    let (key, created) = repo
        .access_key_for_secret(secret.0, &a.label)
        .await
        .context("registering the access key")?;
    if created {
        eprintln!("registered access key {}", key.key_id().short());
    }
    println!("dprepo-access-key-id: {}", key.key_id().to_hex());
    Ok(())
}

pub(super) async fn stat(cli: &DatasafedCli, a: &StatArgs) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let repo = open(&ctx, false, Blobs::Never).await?;
    let ns = Namespace::load(repo.as_ref()).await?;
    let (mut total, mut dirs, mut files) = (0u64, 0u64, 0u64);
    if let Some(f) = ns.files.get(&path) {
        total = f.size;
        files = 1;
    } else if ns.is_dir(&path) || path == ctx.base {
        // The base path always exists, as the root of an empty bucket does.
        for e in ns.below(&path, None) {
            if e.is_dir {
                dirs += 1;
            } else {
                files += 1;
                total += u64::try_from(e.size).unwrap_or(0);
            }
        }
    } else {
        bail!("stat {:?}: directory not found", a.rpath);
    }
    let entries = dirs + files;
    let text = if a.json {
        // Go marshals map keys in sorted order.
        format!(
            "{{\"dirs\":{dirs},\"entries\":{entries},\"files\":{files},\"total_size\":{total}}}\n"
        )
    } else {
        format!("TotalSize: {total}\nEntries: {entries}\nDirs: {dirs}\nFiles: {files}\n")
    };
    crate::output::print(&text)?;
    Ok(())
}

pub(super) async fn rm(cli: &DatasafedCli, a: &RmArgs) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("rm {:?}", a.rpath);
    let Some(repo) = open(&ctx, false, Blobs::Never).await? else {
        return Ok(()); // nothing stored anywhere: removing nothing succeeds
    };
    let ns = Namespace::load(Some(&repo)).await?;
    let mut doomed: BTreeSet<BlobId> = BTreeSet::new();
    if let Some(f) = ns.files.get(&path) {
        doomed.extend(f.all.iter().copied());
    } else if ns.is_dir(&path) {
        if !a.recursive {
            bail!("{what}: is a directory (use -r to remove it and everything in it)");
        }
        for (p, f) in &ns.files {
            if is_within(p, &path) {
                doomed.extend(f.all.iter().copied());
            }
        }
        for (p, d) in &ns.dirs {
            if is_within(p, &path) {
                doomed.extend(d.markers.iter().copied());
            }
        }
    }
    let ids: Vec<BlobId> = doomed.into_iter().collect();
    forget_snapshots(&repo, &ids).await.with_context(|| what)?;
    Ok(())
}

pub(super) async fn rmdir(cli: &DatasafedCli, a: &PathArg) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("rmdir {:?}", a.rpath);
    let repo = open(&ctx, false, Blobs::Never).await?;
    let ns = Namespace::load(repo.as_ref()).await?;
    if ns.files.contains_key(&path) {
        bail!("{what}: is a file");
    }
    if !ns.is_dir(&path) {
        bail!("{what}: directory not found");
    }
    if !ns.below(&path, Some(1)).is_empty() {
        bail!("{what}: directory not empty");
    }
    if let (Some(repo), Some(d)) = (repo.as_ref(), ns.dirs.get(&path)) {
        forget_snapshots(repo, &d.markers)
            .await
            .with_context(|| what)?;
    }
    Ok(())
}

pub(super) async fn mkdir(cli: &DatasafedCli, a: &PathArg) -> Result<()> {
    let ctx = env(cli)?;
    let path = normalize(&ctx.base, &a.rpath);
    let what = format!("mkdir {:?}", a.rpath);
    if path == "/" {
        return Ok(());
    }
    let repo = open(&ctx, true, Blobs::OnDemand)
        .await?
        .context("no repository")?;
    let ns = Namespace::load(Some(&repo)).await?;
    if let Some(p) = std::iter::once(path.as_str())
        .chain(ancestors(&path))
        .find(|p| ns.files.contains_key(*p))
    {
        bail!("{what}: {} is a file", relative(&ctx, p));
    }
    if ns.dirs.get(&path).is_some_and(|d| !d.markers.is_empty()) {
        return Ok(());
    }
    let options = BackupOptions::default()
        .with_tags(vec![TAG.to_string(), format!("{DIR_TAG}{path}")])
        .with_parent(ParentChoice::None);
    let source = BackupSource::Stream {
        name: basename(&path).to_string(),
        reader: Box::new(std::io::empty()),
    };
    let stored = backup(&repo, source, options, Arc::new(BackupProgress::default())).await;
    warn_index_notes(&repo);
    stored.with_context(|| what)?;
    Ok(())
}
