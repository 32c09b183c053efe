//! Where archived calls are kept. [`ArchiveStore`] is the seam between the archive and its storage: [`LocalStore`], a
//! folder on the local filesystem (the default), and [`super::s3::S3Store`], an S3-compatible object store for a fleet
//! of instances.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ArchiveError;

/// The longest call folder name; longer SIDs are cut (a file name's limit is 255 bytes).
const MAX_KEY_NAME_CHARS: usize = 64;

/// A call's place in the archive: `<YYYY>/<MM>/<DD>/<CallSid>`, by the UTC day the call started.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    /// The folder name: the call SID, made safe for a path (and suffixed when the same SID was archived twice).
    pub name: String,
}

impl CallKey {
    /// The key of a call with this SID starting at `at`.
    pub fn new(call_sid: &str, at: SystemTime) -> CallKey {
        let (year, month, day) = utc_date(at);
        // Bounded: a file name has a length limit (Twilio's SIDs are 34 characters).
        let name: String = call_sid
            .chars()
            .take(MAX_KEY_NAME_CHARS)
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let name = if name.is_empty() { "unknown".to_owned() } else { name };
        CallKey { year, month, day, name }
    }

    /// The folder, relative to the archive's root.
    pub fn relative_path(&self) -> PathBuf {
        PathBuf::from(format!("{:04}", self.year))
            .join(format!("{:02}", self.month))
            .join(format!("{:02}", self.day))
            .join(&self.name)
    }

    /// Reads a key back from a folder path relative to the root (`2026/11/25/CA…`).
    pub fn from_relative(path: &Path) -> Option<CallKey> {
        let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
        let [year, month, day, name] = parts.as_slice() else { return None };
        Some(CallKey {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
            day: day.parse().ok()?,
            name: (*name).to_owned(),
        })
    }

    /// Days since 1970-01-01 of the call's folder date.
    pub fn days_since_epoch(&self) -> i64 {
        days_from_civil(i64::from(self.year), self.month, self.day)
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}/{:02}/{:02}/{}", self.year, self.month, self.day, self.name)
    }
}

/// A file of a call written as the call goes on. `flush` hands what was written to the store when the store is ready
/// for it (an object store uploads a part at its own cadence); `sync` makes it durable now.
pub trait CallWriter: Write + Send {
    /// Everything written so far is in the store when this returns.
    fn sync(&mut self) -> Result<(), ArchiveError>;
    /// Overwrites the first `bytes.len()` bytes of a file opened with [`ArchiveStore::create`], in place (a header
    /// whose sizes are known only once the call ends); the writer then goes on at the end. The store has the new
    /// bytes when this returns.
    fn rewrite_start(&mut self, bytes: &[u8]) -> Result<(), ArchiveError>;
}

impl CallWriter for fs::File {
    fn sync(&mut self) -> Result<(), ArchiveError> {
        // Writes go straight to the file; the page cache survives a crash of Parley.
        self.flush().map_err(ArchiveError::io("archive file"))
    }

    fn rewrite_start(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        use std::io::{Seek, SeekFrom};
        self.seek(SeekFrom::Start(0))
            .and_then(|_| self.write_all(bytes))
            .and_then(|()| self.seek(SeekFrom::End(0)))
            .map(|_| ())
            .map_err(ArchiveError::io("archive file"))
    }
}

/// Storage for archived calls. Calls are folders of named files; the recorder appends to the recording and the
/// timeline as the call goes on and replaces the metadata whole.
pub trait ArchiveStore: Send + Sync {
    /// Creates the call's folder; when `key` is taken (the same SID twice in a day) a free `-2`, `-3`… is used.
    fn create_call(&self, key: CallKey) -> Result<CallKey, ArchiveError>;
    /// Opens a file of the call for writing from its start (truncating it).
    fn create(&self, key: &CallKey, name: &str) -> Result<Box<dyn CallWriter>, ArchiveError>;
    /// Opens a file of the call for appending.
    fn append(&self, key: &CallKey, name: &str) -> Result<Box<dyn CallWriter>, ArchiveError>;
    /// Replaces a file of the call whole, atomically: readers see the old or the new content, never half of it.
    fn put(&self, key: &CallKey, name: &str, bytes: &[u8]) -> Result<(), ArchiveError>;
    /// Reads a file of the call.
    fn get(&self, key: &CallKey, name: &str) -> Result<Vec<u8>, ArchiveError>;
    /// Whether the call has this file, without reading it (a recording can be megabytes).
    fn has(&self, key: &CallKey, name: &str) -> Result<bool, ArchiveError>;
    /// Deletes a file of the call (the μ-law recording once its Opus form is written); one already gone is not an
    /// error.
    fn delete(&self, key: &CallKey, name: &str) -> Result<(), ArchiveError>;
    /// Every call in the archive.
    fn list(&self) -> Result<Vec<CallKey>, ArchiveError>;
    /// The calls in day folders from `since_day` (days since 1970-01-01) on; stores with many calls can answer it
    /// without listing them all.
    fn list_since(&self, since_day: i64) -> Result<Vec<CallKey>, ArchiveError> {
        Ok(self.list()?.into_iter().filter(|key| key.days_since_epoch() >= since_day).collect())
    }
    /// Deletes a call and everything in it.
    fn remove(&self, key: &CallKey) -> Result<(), ArchiveError>;
    /// The call's folder on the local filesystem, for stores that have one.
    fn local_dir(&self, key: &CallKey) -> Option<PathBuf>;

    /// Creates a small record beside the calls (the after-call queue's jobs and claims; `path` is relative to the
    /// archive, under a folder starting with a dot) only if there is none yet: of several instances racing, exactly
    /// one gets `true`. Readers see the whole record or none.
    fn create_record(&self, path: &str, bytes: &[u8]) -> Result<bool, ArchiveError>;
    /// Writes a record whole, replacing it atomically.
    fn put_record(&self, path: &str, bytes: &[u8]) -> Result<(), ArchiveError>;
    /// A record's content; `None` when there is none.
    fn get_record(&self, path: &str) -> Result<Option<Vec<u8>>, ArchiveError>;
    /// The names of the records directly in a folder, sorted; none when the folder does not exist.
    fn list_records(&self, folder: &str) -> Result<Vec<String>, ArchiveError>;
    /// Deletes a record; one already gone is not an error.
    fn delete_record(&self, path: &str) -> Result<(), ArchiveError>;
}

/// The archive as folders on the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store under `root`, created when missing.
    pub fn new(root: &Path) -> Result<LocalStore, ArchiveError> {
        fs::create_dir_all(root).map_err(ArchiveError::io(root))?;
        Ok(LocalStore { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &CallKey, name: &str) -> PathBuf {
        self.root.join(key.relative_path()).join(name)
    }
}

impl ArchiveStore for LocalStore {
    fn create_call(&self, key: CallKey) -> Result<CallKey, ArchiveError> {
        let day = self.root.join(key.relative_path()).parent().map(Path::to_path_buf).unwrap_or_default();
        fs::create_dir_all(&day).map_err(ArchiveError::io(&day))?;
        for attempt in 1u32.. {
            let name = if attempt == 1 { key.name.clone() } else { format!("{}-{attempt}", key.name) };
            let dir = day.join(&name);
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(CallKey { name, ..key }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(ArchiveError::Io { path: dir, source: err }),
            }
        }
        unreachable!("the attempts never run out")
    }

    fn create(&self, key: &CallKey, name: &str) -> Result<Box<dyn CallWriter>, ArchiveError> {
        let path = self.path(key, name);
        let file = fs::File::create(&path).map_err(ArchiveError::io(&path))?;
        Ok(Box::new(file))
    }

    fn append(&self, key: &CallKey, name: &str) -> Result<Box<dyn CallWriter>, ArchiveError> {
        let path = self.path(key, name);
        let file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(ArchiveError::io(&path))?;
        Ok(Box::new(file))
    }

    fn put(&self, key: &CallKey, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let path = self.path(key, name);
        let temporary = path.with_extension("tmp");
        fs::write(&temporary, bytes).map_err(ArchiveError::io(&temporary))?;
        fs::rename(&temporary, &path).map_err(ArchiveError::io(&path))
    }

    fn get(&self, key: &CallKey, name: &str) -> Result<Vec<u8>, ArchiveError> {
        let path = self.path(key, name);
        fs::read(&path).map_err(ArchiveError::io(&path))
    }

    fn has(&self, key: &CallKey, name: &str) -> Result<bool, ArchiveError> {
        Ok(self.path(key, name).is_file())
    }

    fn delete(&self, key: &CallKey, name: &str) -> Result<(), ArchiveError> {
        let path = self.path(key, name);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(ArchiveError::Io { path, source: err }),
            _ => Ok(()),
        }
    }

    fn list(&self) -> Result<Vec<CallKey>, ArchiveError> {
        let mut keys = Vec::new();
        for year in subdirs(&self.root)? {
            for month in subdirs(&year)? {
                for day in subdirs(&month)? {
                    for call in subdirs(&day)? {
                        if let Some(key) = call.strip_prefix(&self.root).ok().and_then(CallKey::from_relative) {
                            keys.push(key);
                        }
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn list_since(&self, since_day: i64) -> Result<Vec<CallKey>, ArchiveError> {
        let mut keys = Vec::new();
        for day in days_until_today(since_day) {
            let folder = self.root.join(day);
            if !folder.is_dir() {
                continue;
            }
            for call in subdirs(&folder)? {
                keys.extend(call.strip_prefix(&self.root).ok().and_then(CallKey::from_relative));
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn remove(&self, key: &CallKey) -> Result<(), ArchiveError> {
        let dir = self.root.join(key.relative_path());
        fs::remove_dir_all(&dir).map_err(ArchiveError::io(&dir))?;
        // Empty day, month and year folders go too; a folder that is not empty stays (the error is expected).
        let mut parent = dir.parent();
        while let Some(folder) = parent {
            if folder == self.root || fs::remove_dir(folder).is_err() {
                break;
            }
            parent = folder.parent();
        }
        Ok(())
    }

    fn local_dir(&self, key: &CallKey) -> Option<PathBuf> {
        Some(self.root.join(key.relative_path()))
    }

    fn create_record(&self, path: &str, bytes: &[u8]) -> Result<bool, ArchiveError> {
        let path = self.record_path(path)?;
        let temporary = unique_temporary(&path);
        fs::write(&temporary, bytes).map_err(ArchiveError::io(&temporary))?;
        // A hard link is made whole or not at all, and fails when the name is taken: an atomic create.
        let linked = fs::hard_link(&temporary, &path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(ArchiveError::Io { path, source }),
        }
    }

    fn put_record(&self, path: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let path = self.record_path(path)?;
        let temporary = unique_temporary(&path);
        fs::write(&temporary, bytes).map_err(ArchiveError::io(&temporary))?;
        fs::rename(&temporary, &path).map_err(ArchiveError::io(&path))
    }

    fn get_record(&self, path: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let path = self.root.join(path);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ArchiveError::Io { path, source }),
        }
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ArchiveError> {
        let dir = self.root.join(folder);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ArchiveError::Io { path: dir, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ArchiveError::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn delete_record(&self, path: &str) -> Result<(), ArchiveError> {
        let path = self.root.join(path);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(ArchiveError::Io { path, source: err }),
            _ => Ok(()),
        }
    }
}

impl LocalStore {
    /// A record's path, its folder created.
    fn record_path(&self, path: &str) -> Result<PathBuf, ArchiveError> {
        let path = self.root.join(path);
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder).map_err(ArchiveError::io(folder))?;
        }
        Ok(path)
    }
}

/// A hidden temporary name beside `path`, unique to this process and write.
fn unique_temporary(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).map_err(ArchiveError::io(dir))? {
        let entry = entry.map_err(ArchiveError::io(dir))?;
        // Hidden folders (`.transcribe-queue`) belong to other tools.
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The day folders (`YYYY/MM/DD`) from `since_day` (days since 1970-01-01) to today.
pub(crate) fn days_until_today(since_day: i64) -> impl Iterator<Item = String> {
    let today = (super::lease::millis_since_epoch(SystemTime::now()) / 86_400_000) as i64;
    (since_day..=today.max(since_day)).map(|day| {
        let (year, month, day) = civil_from_days(day);
        format!("{year:04}/{month:02}/{day:02}")
    })
}

/// The UTC calendar date of an instant.
pub(crate) fn utc_date(at: SystemTime) -> (u32, u32, u32) {
    let days = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0) as i64;
    civil_from_days(days)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// The inverse: (year, month, day) to days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(utc_date(UNIX_EPOCH + Duration::from_secs(1_764_028_800)), (2025, 11, 25));
        for days in [-1000, 0, 59, 60, 11_016, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(i64::from(y), m, d), days);
        }
    }

    #[test]
    fn keys_are_safe_folder_names() {
        let key = CallKey::new("CA12/../x", UNIX_EPOCH);
        assert_eq!(key.to_string(), "1970/01/01/CA12____x");
        assert_eq!(CallKey::from_relative(&key.relative_path()), Some(key));
    }

    #[test]
    fn the_same_sid_twice_gets_a_second_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let first = store.create_call(CallKey::new("CA1", UNIX_EPOCH)).unwrap();
        let second = store.create_call(CallKey::new("CA1", UNIX_EPOCH)).unwrap();
        assert_eq!(first.name, "CA1");
        assert_eq!(second.name, "CA1-2");
        assert_eq!(store.list().unwrap(), vec![first.clone(), second]);
        store.remove(&first).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn records_are_created_once_and_are_not_calls() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        assert!(store.create_record(".queue/jobs/a.json", b"1").unwrap());
        assert!(!store.create_record(".queue/jobs/a.json", b"2").unwrap(), "the second create loses");
        assert_eq!(store.get_record(".queue/jobs/a.json").unwrap().as_deref(), Some(&b"1"[..]));
        store.put_record(".queue/jobs/b.json", b"3").unwrap();
        assert_eq!(store.list_records(".queue/jobs").unwrap(), vec!["a.json", "b.json"]);
        assert!(store.list().unwrap().is_empty());
        store.delete_record(".queue/jobs/a.json").unwrap();
        store.delete_record(".queue/jobs/a.json").unwrap();
        assert_eq!(store.get_record(".queue/jobs/a.json").unwrap(), None);
        assert!(store.list_records(".queue/none").unwrap().is_empty());
    }

    #[test]
    fn recent_calls_are_listed_from_their_day_folders() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let now = SystemTime::now();
        let today = store.create_call(CallKey::new("CAnow", now)).unwrap();
        let old = store.create_call(CallKey::new("CAold", now - Duration::from_secs(3 * 86_400))).unwrap();
        assert_eq!(store.list_since(today.days_since_epoch() - 1).unwrap(), vec![today.clone()]);
        assert_eq!(store.list_since(old.days_since_epoch()).unwrap().len(), 2);
    }
}
