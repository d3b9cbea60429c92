//! Page-by-page comparison of two database files.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::Error;
use crate::error::IoContext;

/// Indices (0-based) of the `page_size`-byte pages of `new_db` that differ from `old_db`.
///
/// Pages past the end of `old_db` (the file grew) count as changed; pages that only `old_db`
/// has (the file shrank) don't, since a backup of `new_db` need not store them. A short last
/// page is compared as far as it goes. Reads both files once, sequentially.
///
/// # Panics
/// If `page_size` is 0.
pub fn changed_pages(old_db: &Path, new_db: &Path, page_size: usize) -> Result<Vec<u64>, Error> {
    assert!(page_size > 0, "page_size must be positive");
    let mut old = BufReader::new(File::open(old_db).at(old_db)?);
    let mut new = BufReader::new(File::open(new_db).at(new_db)?);
    let mut a = vec![0u8; page_size];
    let mut b = vec![0u8; page_size];
    let mut changed = Vec::new();
    for page in 0u64.. {
        let nb = read_page(&mut new, &mut b).at(new_db)?;
        if nb == 0 {
            break;
        }
        let na = read_page(&mut old, &mut a).at(old_db)?;
        if na != nb || a[..na] != b[..nb] {
            changed.push(page);
        }
    }
    Ok(changed)
}

/// Fills `buf` as far as the file allows; returns how many bytes were read.
fn read_page(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_and_appended_pages_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        let mut a = vec![0u8; 4 * 16];
        std::fs::write(&old, &a).unwrap();
        a[16 * 2 + 3] = 1;
        a.extend_from_slice(&[7; 20]);
        std::fs::write(&new, &a).unwrap();
        assert_eq!(changed_pages(&old, &new, 16).unwrap(), vec![2, 4, 5]);
        assert!(changed_pages(&old, &old, 16).unwrap().is_empty());
    }

    #[test]
    fn shrunk_file_reports_no_removed_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        std::fs::write(&old, [1u8; 64]).unwrap();
        std::fs::write(&new, [1u8; 32]).unwrap();
        assert!(changed_pages(&old, &new, 16).unwrap().is_empty());
    }
}
