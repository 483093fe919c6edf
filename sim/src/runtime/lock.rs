//! A machine-wide advisory lock (flock), released when the holder exits, even
//! by SIGKILL, so a crashed build never wedges the next one.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::progress::Progress;

pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub async fn acquire(path: &Path, progress: &Progress, what: &str) -> std::io::Result<FileLock> {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        let mut told = false;
        loop {
            // SAFETY: the fd is valid for the life of `file`.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err);
            }
            if !told {
                progress.say(&format!("waiting for another {what} to finish ({})", path.display()));
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
