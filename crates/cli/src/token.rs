//! Where the login token is kept: `SHIPPY_TOKEN` wins, else the file `SHIPPY_TOKEN_FILE`, else
//! `<config dir>/shippy/token` (e.g. `~/.config/shippy/token`), readable only by its owner.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

use crate::error::CliError;

/// The token file's path.
pub fn token_file() -> Result<PathBuf, CliError> {
    if let Some(path) = std::env::var_os("SHIPPY_TOKEN_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    dirs::config_dir()
        .map(|dir| dir.join("shippy").join("token"))
        .ok_or_else(|| CliError::Setup("no config directory: set SHIPPY_TOKEN_FILE or HOME".into()))
}

/// Largest token file read: a shippy token is under 1 KiB, an exchanged one a few.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// The token to send.
pub fn load() -> Result<String, CliError> {
    if let Ok(token) = std::env::var("SHIPPY_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    load_from(&token_file()?)
}

/// The token saved at `path`, read through a bound: the path comes from the environment and
/// could name anything (`/dev/zero`, a huge file).
fn load_from(path: &Path) -> Result<String, CliError> {
    let fail = |e: std::io::Error| CliError::Setup(format!("cannot read {}: {e}", path.display()));
    let file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CliError::NotLoggedIn),
        opened => opened.map_err(fail)?,
    };
    let mut token = String::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut token)
        .map_err(fail)?;
    if token.len() as u64 > MAX_TOKEN_FILE {
        return Err(CliError::Setup(format!(
            "{} is larger than {} KiB: not a token file",
            path.display(),
            MAX_TOKEN_FILE / 1024
        )));
    }
    match token.trim() {
        "" => Err(CliError::NotLoggedIn),
        token => Ok(token.to_owned()),
    }
}

/// Saves `token` with owner-only permissions; returns where.
pub fn save(token: &str) -> Result<PathBuf, CliError> {
    let path = token_file()?;
    save_to(&path, token)?;
    Ok(path)
}

/// Writes `token` to a new owner-only file beside `path` and renames it over `path`. A file that
/// is already there keeps its permissions when opened for writing (they may let others read it),
/// and a symbolic link there would be followed; a rename replaces either, and a reader never sees
/// half a token.
fn save_to(path: &Path, token: &str) -> Result<(), CliError> {
    let fail = |e: std::io::Error| {
        CliError::Setup(format!("cannot save the token to {}: {e}", path.display()))
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name = path.file_name().unwrap_or_else(|| "token".as_ref());
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = dir.join(temporary);
    // Left over by a run of this process id that was killed mid-save: ours to replace.
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(token.as_bytes())?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temporary, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    renamed.map_err(fail)
}

/// Deletes the saved token, if any.
pub fn remove() -> Result<(), CliError> {
    let path = token_file()?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::Setup(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_saved_token_is_owner_only_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "old").expect("an earlier file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        save_to(&path, "new-token").expect("saved");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_from(&path).expect("loaded"), "new-token");

        // A symbolic link there is replaced, not followed.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").expect("target");
        let link = dir.path().join("linked");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        save_to(&link, "t").expect("saved");
        assert_eq!(
            std::fs::read_to_string(&elsewhere).expect("read"),
            "untouched"
        );
        assert_eq!(load_from(&link).expect("loaded"), "t");
        // Nothing is left beside it.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["elsewhere", "linked", "token"]);
    }

    #[test]
    fn a_token_file_is_read_through_a_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            load_from(&dir.path().join("none")),
            Err(CliError::NotLoggedIn)
        ));
        let blank = dir.path().join("blank");
        std::fs::write(&blank, " \n").expect("write");
        assert!(matches!(load_from(&blank), Err(CliError::NotLoggedIn)));
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'a'; 64 * 1024 + 1]).expect("write");
        let Err(CliError::Setup(message)) = load_from(&huge) else {
            panic!("a huge file is refused");
        };
        assert!(
            message.ends_with("is larger than 64 KiB: not a token file"),
            "{message}"
        );
        #[cfg(target_os = "linux")]
        assert!(matches!(
            load_from(Path::new("/dev/zero")),
            Err(CliError::Setup(_))
        ));
    }
}
