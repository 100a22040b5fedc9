//! Artifacts in transit between an agent and its server: a plain tar of regular files and
//! directories. [`pack`] writes one from a directory; [`unpack`] reads one back into a
//! directory, taking nothing but regular files and directories at relative paths that stay
//! inside it, and stopping as soon as the files' bytes pass a limit.
//!
//! ## Guarantees
//! - [`unpack`] never writes outside `into`: an absolute path, a `..` segment, a link, a
//!   device or any other kind of entry is refused ([`Refused`]) before anything of it is
//!   written.
//! - It never writes more than `limit` bytes of files: the sizes are counted from the headers
//!   before each file is written.

use std::fs;
use std::io;
use std::path::{Component, Path};

/// Why an archive was not unpacked whole.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The files hold more bytes than allowed.
    #[error("the files are over {limit} bytes ({bytes} bytes up to `{path}`)")]
    TooLarge {
        path: String,
        bytes: u64,
        limit: u64,
    },
    /// An entry that is not a regular file or a directory at a relative path inside.
    #[error("entry `{path}` is not a regular file or directory at a relative path ({kind})")]
    Entry { path: String, kind: String },
    /// The archive is damaged, or the disk failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What an archive held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpacked {
    pub files: usize,
    pub bytes: u64,
}

/// Writes a tar of the regular files and directories under `dir` to the new file `out`
/// (mode 0600); symbolic links are skipped. Answers what it holds.
pub fn pack(dir: &Path, out: &Path) -> io::Result<Unpacked> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)?;
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    let mut packed = Unpacked::default();
    for found in super::workspace::files_in(dir)? {
        builder.append_path_with_name(&found.path, &found.rel)?;
        packed.files += 1;
        packed.bytes += found.size;
    }
    builder
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())?;
    Ok(packed)
}

/// Whether `path` is relative and stays below where it is unpacked.
fn inside(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

/// Unpacks the tar file `archive` into the directory `into`, within `limit` bytes of files.
pub fn unpack(archive: &Path, into: &Path, limit: u64) -> Result<Unpacked, Refused> {
    let mut tar = tar::Archive::new(io::BufReader::new(fs::File::open(archive)?));
    let mut unpacked = Unpacked::default();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let shown = path.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if !inside(&path) || !(kind.is_file() || kind.is_dir()) {
            return Err(Refused::Entry {
                path: shown,
                kind: format!("{kind:?}"),
            });
        }
        let target = into.join(&path);
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
            continue;
        }
        let size = entry.header().size()?;
        unpacked.bytes = unpacked.bytes.saturating_add(size);
        if unpacked.bytes > limit {
            return Err(Refused::TooLarge {
                path: shown,
                bytes: unpacked.bytes,
                limit,
            });
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        // A directory of the archive never comes from a link: only directories are made.
        let mut out = fs::File::create(&target)?;
        io::copy(&mut io::Read::take(&mut entry, size), &mut out)?;
        unpacked.files += 1;
    }
    Ok(unpacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_directory_unpacks_to_the_same_files() {
        let from = tempfile::tempdir().unwrap();
        fs::create_dir_all(from.path().join("dist/css")).unwrap();
        fs::write(from.path().join("dist/app.js"), "js").unwrap();
        fs::write(from.path().join("dist/css/a.css"), "css!").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.path().join("dist/link")).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let tar = scratch.path().join("a.tar");
        let packed = pack(from.path(), &tar).unwrap();
        assert_eq!(packed, Unpacked { files: 2, bytes: 6 });
        let into = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&tar, into.path(), 6).unwrap(), packed);
        assert_eq!(
            fs::read_to_string(into.path().join("dist/css/a.css")).unwrap(),
            "css!"
        );
        assert!(!into.path().join("dist/link").exists());
    }

    #[test]
    fn unpacking_stops_at_the_limit_and_refuses_links_and_paths_outside() {
        let from = tempfile::tempdir().unwrap();
        fs::write(from.path().join("big"), vec![b'x'; 100]).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let tar = scratch.path().join("a.tar");
        pack(from.path(), &tar).unwrap();
        let into = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(&tar, into.path(), 99),
            Err(Refused::TooLarge { limit: 99, .. })
        ));
        assert!(!into.path().join("big").exists());

        for (name, kind) in [
            ("link", tar::EntryType::Symlink),
            ("../up", tar::EntryType::Regular),
        ] {
            let bad = scratch.path().join(format!("bad-{kind:?}.tar"));
            let mut builder = tar::Builder::new(fs::File::create(&bad).unwrap());
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(0);
            header.set_mode(0o644);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/etc").unwrap();
            }
            // `append_data` refuses `..`; the raw header path is what a hostile peer sends.
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_cksum();
            builder.append(&header, io::empty()).unwrap();
            builder.finish().unwrap();
            let err = unpack(&bad, into.path(), 1000).unwrap_err();
            assert!(matches!(err, Refused::Entry { .. }), "{name}: {err}");
        }
        assert!(!scratch.path().join("up").exists());
    }
}
