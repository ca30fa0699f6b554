//! Files and directories only the node's own user may read: every file the node creates
//! in its data directory is made here.
//!
//! What it promises: a directory made here has mode 0700 and a file 0600 from the moment
//! it exists, whatever the process umask (the mode is given to `open`/`mkdir` and then set
//! exactly on the open descriptor, before any data is written), so no byte of a volume,
//! an event or a secret is ever readable by group or other, not even for an instant.
//! Opening a file that already exists leaves its mode alone here; the node tightens what
//! it finds at start (`node::data_dir`).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the node creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the node creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` and its missing parents as 0700 directories (an existing directory is
/// left as it is).
pub fn create_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        create_dir(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => fs::set_permissions(path, Permissions::from_mode(DIR_MODE)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Opens `path` with `options` (read/write/append as the caller set them), creating it
/// with mode 0600 when it does not exist. A file this call created gets exactly 0600
/// before the caller can write to it; an existing one keeps its mode.
pub fn open_or_create(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    match options.clone().create_new(true).mode(FILE_MODE).open(path) {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(FILE_MODE))?;
            Ok(file)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => options.open(path),
        Err(error) => Err(error),
    }
}

/// Creates a new, empty 0600 file at `path` for writing, replacing any file there (a new
/// inode, so an old file's looser mode is not inherited).
pub fn create_new(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Replaces `path` with `bytes` atomically: writes and fsyncs `<path>.tmp` (a new 0600
/// file), renames it over `path` and fsyncs the directory. A crash leaves the old or the
/// new contents whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    let mut file = create_new(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    let dir = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn what_is_created_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let file = nested.join("f");
        let other = nested.join("g");
        let replaced = nested.join("r");
        create_dir(&nested).unwrap();
        open_or_create(&file, OpenOptions::new().read(true).write(true)).unwrap();
        create_new(&other).unwrap();
        write_atomically(&replaced, b"x").unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&other), 0o600);
        assert_eq!(mode(&replaced), 0o600);
        assert_eq!(fs::read(&replaced).unwrap(), b"x");
    }

    #[test]
    fn an_existing_file_keeps_its_mode_and_contents_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        open_or_create(&path, OpenOptions::new().read(true).write(true)).unwrap();
        assert_eq!(mode(&path), 0o640);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        create_new(&path).unwrap();
        assert_eq!(mode(&path), 0o600, "create_new makes a new private inode");
    }
}
