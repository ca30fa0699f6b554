//! `events.log` on disk: reading it back at open (dropping a torn tail, skipping corrupt
//! lines) and rewriting it with only the retained events.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use super::{Event, Shared};
use crate::private_files;

pub(super) const LOG_NAME: &str = "events.log";
pub(super) const TMP_NAME: &str = "events.log.tmp";

/// Events serialized per read-lock hold while rewriting the log.
const REWRITE_CHUNK: usize = 4096;

/// What reading the log back found.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// Lines in the file after loading (good ones and skipped corrupt ones).
    pub lines: usize,
    /// Length of the file after loading: the end of its last good line.
    pub len: u64,
    /// Id of the last good event, 0 if none.
    pub last_id: u64,
    /// Corrupt lines between good ones, skipped.
    pub corrupt: usize,
    /// Bytes after the last good line (a torn or corrupt tail), cut off.
    pub torn_bytes: u64,
}

impl Loaded {
    /// The one stderr warning loading deserves, if any.
    pub(super) fn warning(&self, path: &Path) -> Option<String> {
        let mut parts = Vec::new();
        if self.torn_bytes > 0 {
            parts.push(format!(
                "cut a torn or corrupt last line ({} bytes)",
                self.torn_bytes
            ));
        }
        if self.corrupt > 0 {
            parts.push(format!("skipped {} corrupt lines", self.corrupt));
        }
        (!parts.is_empty()).then(|| format!("troika: {}: {}", path.display(), parts.join(", ")))
    }
}

/// Reads the log at `path` (creating it if missing), handing each good event to `sink`
/// in file order, and truncates the file after its last good line. A line is good when it
/// ends in a newline, parses as an [`Event`], and its id is above the previous good one.
pub(super) fn load(path: &Path, mut sink: impl FnMut(Event)) -> io::Result<Loaded> {
    let file = private_files::open_or_create(path, OpenOptions::new().read(true).write(true))?;
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut loaded = Loaded::default();
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut bad_since_good = 0usize;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        offset += read as u64;
        let parsed = line
            .strip_suffix(b"\n")
            .and_then(|body| serde_json::from_slice::<Event>(body).ok())
            .filter(|event| event.id > loaded.last_id);
        match parsed {
            Some(mut event) => {
                event.seq_num = event.id;
                loaded.last_id = event.id;
                loaded.corrupt += bad_since_good;
                loaded.lines += bad_since_good + 1;
                loaded.len = offset;
                bad_since_good = 0;
                sink(event);
            }
            None => bad_since_good += 1,
        }
    }
    if offset > loaded.len {
        loaded.torn_bytes = offset - loaded.len;
        file.set_len(loaded.len)?;
        file.sync_all()?;
    }
    Ok(loaded)
}

/// `path`'s directory entry changes (a rename) made durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_line(out: &mut Vec<u8>, event: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *out, event)?;
    out.push(b'\n');
    Ok(())
}

/// The log after a rewrite.
pub(super) struct Rewritten {
    pub file: File,
    pub lines: usize,
    pub len: u64,
}

impl Shared {
    /// Rewrites `events.log` with the retained events: writes `events.log.tmp` in chunks
    /// (holding the read lock only per chunk) and syncs it, then under the write lock adds
    /// the events raised meanwhile, syncs again, renames it over the log and syncs the
    /// directory. A crash before the rename leaves the old log whole; after it, the new.
    /// On success the state appends to the new file from then on.
    pub(super) fn rewrite(&self) -> io::Result<()> {
        let tmp_path = self.dir.join(TMP_NAME);
        let result = self.rewrite_into(&tmp_path);
        if result.is_err() {
            let _ = fs::remove_file(&tmp_path);
        }
        result
    }

    fn rewrite_into(&self, tmp_path: &Path) -> io::Result<()> {
        let mut tmp = BufWriter::with_capacity(1 << 20, private_files::create_new(tmp_path)?);
        let mut written_through = 0;
        let mut lines = 0;
        let mut len = 0;
        let mut chunk = Vec::new();
        loop {
            let events = self
                .state
                .read()
                .retained
                .after(written_through, REWRITE_CHUNK);
            let Some(last) = events.last() else { break };
            written_through = last.id;
            chunk.clear();
            for event in &events {
                write_line(&mut chunk, event)?;
            }
            tmp.write_all(&chunk)?;
            lines += events.len();
            len += chunk.len() as u64;
        }
        tmp.flush()?;
        tmp.get_ref().sync_data()?;

        let mut state = self.state.write();
        let events = state.retained.after(written_through, usize::MAX);
        chunk.clear();
        for event in &events {
            write_line(&mut chunk, event)?;
        }
        tmp.write_all(&chunk)?;
        lines += events.len();
        len += chunk.len() as u64;
        let tmp = tmp.into_inner().map_err(io::IntoInnerError::into_error)?;
        tmp.sync_data()?;
        drop(tmp);
        let log_path = self.dir.join(LOG_NAME);
        fs::rename(tmp_path, &log_path)?;
        sync_dir(&self.dir)?;
        state.install(
            Rewritten {
                file: OpenOptions::new().append(true).open(&log_path)?,
                lines,
                len,
            },
            self.keep,
        );
        Ok(())
    }
}
