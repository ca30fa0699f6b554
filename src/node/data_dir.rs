//! The node's data directory is private: what the node promises about it at start.
//!
//! The directory is 0700 and everything in it is readable and writable only by the node's
//! user: new files and directories are created so ([`crate::private_files`]), and what a
//! start finds there (a directory made by an older build as 0755, images and logs made as
//! 0644, files an operator copied in) is tightened before anything is opened, one notice
//! line per tightened path. Modes are only ever tightened: the group and other bits are
//! cleared, the owner's bits are left as they are. Symbolic links are not followed, and
//! unix sockets are left alone (their directory's 0700 already keeps others out).

use std::fs::{self, Permissions};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

use crate::private_files;

/// Bits no path in the data directory may have.
const GROUP_AND_OTHER: u32 = 0o077;

/// Creates the data directory (0700) or tightens the existing one and everything under
/// it. Returns how many paths were tightened.
pub fn prepare(data_dir: &Path) -> anyhow::Result<usize> {
    if !data_dir.exists() {
        private_files::create_dir(data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}; check that its parent exists and is writable",
                data_dir.display()
            )
        })?;
        return Ok(0);
    }
    let mut tightened = 0;
    tighten_tree(data_dir, &mut tightened)?;
    Ok(tightened)
}

/// Tightens `path` and, for a directory, everything under it (no symlinks followed).
fn tighten_tree(path: &Path, tightened: &mut usize) -> anyhow::Result<()> {
    let metadata = fs::symlink_metadata(path)
        .with_context(|| format!("cannot inspect {} in the data directory", path.display()))?;
    let file_type = metadata.file_type();
    if file_type.is_symlink() || file_type.is_socket() {
        return Ok(());
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_AND_OTHER != 0 {
        let private = mode & !GROUP_AND_OTHER;
        fs::set_permissions(path, Permissions::from_mode(private)).with_context(|| {
            format!(
                "cannot make {} private (mode {mode:04o}); the node must own its data directory",
                path.display()
            )
        })?;
        crate::say!(
            "troika: tightened {} from {mode:04o} to {private:04o}: only the node's user may read the data directory",
            path.display()
        );
        *tightened += 1;
    }
    if file_type.is_dir() {
        let entries = fs::read_dir(path)
            .with_context(|| format!("cannot list {} in the data directory", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            tighten_tree(&entry.path(), tightened)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_private() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        assert_eq!(prepare(&dir).unwrap(), 0);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn loose_modes_are_tightened_never_loosened() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let nested = dir.join("reservations");
        fs::create_dir_all(&nested).unwrap();
        let image = dir.join("nlsas0.img");
        let strict = dir.join("users.json");
        let reservation = nested.join("dataset-1.pr");
        let socket = dir.join("troika.sock");
        for file in [&image, &strict, &reservation] {
            fs::write(file, b"x").unwrap();
        }
        let _listener = UnixListener::bind(&socket).unwrap();
        let outside = parent.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        for (path, loose) in [
            (&dir, 0o755),
            (&nested, 0o775),
            (&image, 0o644),
            (&strict, 0o400),
            (&reservation, 0o666),
            (&socket, 0o777),
        ] {
            fs::set_permissions(path, Permissions::from_mode(loose)).unwrap();
        }
        assert_eq!(prepare(&dir).unwrap(), 4);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&image), 0o600);
        assert_eq!(mode(&strict), 0o400, "an owner-only mode is not loosened");
        assert_eq!(mode(&reservation), 0o600);
        assert_eq!(mode(&socket), 0o777, "sockets are left alone");
        assert_eq!(mode(&outside), 0o644, "links are not followed");
        assert_eq!(
            prepare(&dir).unwrap(),
            0,
            "a second start has nothing to do"
        );
    }
}
