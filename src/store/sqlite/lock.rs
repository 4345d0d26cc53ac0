//! The exclusive right to serve one database file: an OS lock on a file
//! beside it, held for the server's lifetime and released by the OS when
//! the process ends, however it ends. The SQLite backend remembers its own
//! writes (the batch cache) and the feed follows only its own commits, which
//! holds only while one server writes the file; the command line's admin
//! commands do not take it and keep working.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
};

use crate::store::StoreError;

#[derive(Debug)]
pub(super) struct ServerLock {
    _file: File,
}

impl ServerLock {
    /// The lock file of `database`.
    pub fn path(database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(".server-lock");
        PathBuf::from(name)
    }

    /// Takes the lock of `database`, or says who holds it.
    pub fn acquire(database: &Path) -> Result<Self, StoreError> {
        let path = Self::path(database);
        let shown = path.display().to_string();
        let io = |source| StoreError::Lock {
            path: shown.clone(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::AlreadyServed {
                    database: database.display().to_string(),
                    holder: if holder.is_empty() {
                        "a process that has not written its id yet".to_owned()
                    } else {
                        holder.to_owned()
                    },
                    lock: shown,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "process {}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file })
    }
}
