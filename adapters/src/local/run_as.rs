//! Local steps as another, unprivileged user (`run_as`): who that user is, and handing a job's
//! workspace over to it before its first step.
//!
//! The server (or agent) must run as root to switch to another user; it keeps root's rights
//! for itself (its data directory, the workspaces' creation and removal, the caches and
//! artifacts it restores and collects), and each step's processes get the user's uid and
//! primary gid, no supplementary groups, and the user's `HOME`, `USER` and `LOGNAME` unless the
//! step sets them.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

/// The user local steps run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl RunAs {
    /// The user named `user` (or with that numeric uid) in the system's user database.
    ///
    /// # Errors
    /// A message that says what is wrong: no such user, or it is root.
    pub fn lookup(user: &str) -> Result<RunAs, String> {
        let found = match user.parse::<u32>() {
            Ok(uid) => passwd(|buf, out, result| unsafe {
                // SAFETY: every pointer is to a live buffer of the stated size.
                libc::getpwuid_r(uid, out, buf.as_mut_ptr(), buf.len(), result)
            }),
            Err(_) => {
                let name = CString::new(user)
                    .map_err(|_| format!("`{user}` is not a user name (it holds a NUL byte)"))?;
                passwd(|buf, out, result| unsafe {
                    // SAFETY: as above; `name` lives across the call.
                    libc::getpwnam_r(name.as_ptr(), out, buf.as_mut_ptr(), buf.len(), result)
                })
            }
        };
        let run_as = found
            .map_err(|err| format!("cannot look up the user `{user}`: {err}"))?
            .ok_or_else(|| {
                format!("there is no user `{user}` on this machine (create it, e.g. `useradd --system --create-home {user}`)")
            })?;
        if run_as.uid == 0 {
            return Err(format!(
                "`{user}` is root: name an unprivileged user, or leave run_as unset"
            ));
        }
        Ok(run_as)
    }

    /// The user named `user`, checked: it exists, it is not root, and this process can switch
    /// to it.
    pub fn checked(user: &str) -> Result<RunAs, String> {
        let run_as = RunAs::lookup(user)?;
        run_as.check_switch()?;
        Ok(run_as)
    }

    /// Whether this process may switch to the user: it is root, or it is the user already.
    pub fn check_switch(&self) -> Result<(), String> {
        // SAFETY: geteuid cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        match euid == 0 || euid == self.uid {
            true => Ok(()),
            false => Err(format!(
                "steps can run as `{}` only when Hodei runs as root (it runs as uid {euid}): start it as root, or leave run_as unset",
                self.name
            )),
        }
    }

    /// Gives `dir` and everything in it (symbolic links themselves, never what they point to)
    /// to the user.
    pub fn hand_over(&self, dir: &Path) -> io::Result<()> {
        let mut todo: Vec<PathBuf> = vec![dir.to_owned()];
        while let Some(path) = todo.pop() {
            std::os::unix::fs::lchown(&path, Some(self.uid), Some(self.gid))?;
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                for entry in std::fs::read_dir(&path)? {
                    todo.push(entry?.path());
                }
            }
        }
        Ok(())
    }
}

/// Runs a `getpw*_r` call with a buffer that grows until the entry fits.
fn passwd(
    call: impl Fn(&mut Vec<libc::c_char>, *mut libc::passwd, *mut *mut libc::passwd) -> libc::c_int,
) -> io::Result<Option<RunAs>> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value for the call to fill.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let code = call(&mut buf, &mut entry, &mut result);
        if code == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if code != 0 {
            return Err(io::Error::from_raw_os_error(code));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the strings point into `buf`, NUL-terminated.
        let text =
            |p: *const libc::c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        return Ok(Some(RunAs {
            name: text(entry.pw_name),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: text(entry.pw_dir),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_user_and_root_are_refused_with_what_to_do() {
        let err = RunAs::lookup("no-such-user-of-hodei").unwrap_err();
        assert!(
            err.contains("there is no user `no-such-user-of-hodei`"),
            "{err}"
        );
        assert!(err.contains("useradd"), "{err}");
        let err = RunAs::lookup("root").unwrap_err();
        assert!(err.contains("is root"), "{err}");
        let err = RunAs::lookup("0").unwrap_err();
        assert!(err.contains("is root"), "{err}");
    }

    #[test]
    fn a_user_is_found_by_name_and_by_uid() {
        // `nobody` is in every Debian's user database.
        let by_name = RunAs::lookup("nobody").unwrap();
        assert_eq!(by_name.name, "nobody");
        let by_uid = RunAs::lookup(&by_name.uid.to_string()).unwrap();
        assert_eq!(by_uid, by_name);
    }
}
