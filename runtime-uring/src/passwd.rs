//! `petrel passwd`: adds, changes and removes users in a password file, like
//! mosquitto_passwd (whose files it reads and whose `$7$` lines it writes).
//!
//! ```text
//! petrel passwd -c passwords alice          # create the file, ask for alice's password
//! petrel passwd passwords bob               # add bob or change his password
//! petrel passwd -b passwords carol s3cret   # password on the command line (batch)
//! petrel passwd -D passwords bob            # remove bob
//! ```
//!
//! Without `-b` the password is read from standard input: twice, with a prompt, on a
//! terminal (it is echoed: run it where nobody watches, or pipe it in); once from a pipe.
//! The file is replaced atomically and created readable by its owner only.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use petrel_auth::password::{valid_user_name, PasswordFile, DEFAULT_ITERATIONS, SALT_LEN};

/// The arguments of `petrel passwd`.
#[derive(Debug, Clone, clap::Args)]
pub struct PasswdArgs {
    /// Create the file, replacing one that exists.
    #[arg(short = 'c', long, conflicts_with = "delete")]
    pub create: bool,
    /// Remove the user.
    #[arg(short = 'D', long)]
    pub delete: bool,
    /// Take the password from the command line.
    #[arg(short = 'b', long, conflicts_with = "delete")]
    pub batch: bool,
    /// PBKDF2-SHA512 iterations for the new hash (each CONNECT of this user costs them).
    #[arg(short = 'i', long, default_value_t = DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(petrel_auth::password::MAX_ITERATIONS)))]
    pub iterations: u32,
    /// The password file.
    pub file: PathBuf,
    /// The user name.
    pub user: String,
    /// The password, with `-b`.
    pub password: Option<String>,
}

/// Runs the command; the error is the message to print.
pub fn run(args: &PasswdArgs) -> Result<String, String> {
    if !valid_user_name(&args.user) {
        return Err(format!(
            "invalid user name `{}`: it must be non-empty, without `:` or control characters",
            args.user.escape_debug()
        ));
    }
    if args.password.is_some() && !args.batch {
        return Err(String::from(
            "give the password on the command line only with -b",
        ));
    }
    let mut file = if args.create {
        PasswordFile::new()
    } else {
        load(&args.file)?
    };
    if args.delete {
        if !file.remove(&args.user) {
            return Err(format!("user `{}` not found", args.user));
        }
        save(&args.file, &file)?;
        return Ok(format!("removed user `{}`", args.user));
    }
    let password = match (&args.password, args.batch) {
        (Some(password), true) => password.clone(),
        (None, true) => return Err(String::from("-b needs the password after the user name")),
        _ => read_password()?,
    };
    let mut salt = [0u8; SALT_LEN];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let existed = file.set(&args.user, password.as_bytes(), &salt, args.iterations);
    save(&args.file, &file)?;
    Ok(format!(
        "{} user `{}`",
        if existed { "changed" } else { "added" },
        args.user
    ))
}

fn load(path: &Path) -> Result<PasswordFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (use -c to create it)", path.display()))?;
    PasswordFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn save(path: &Path, file: &PasswordFile) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let error = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    out.write_all(file.to_text().as_bytes()).map_err(error)?;
    out.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)
}

fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut lines = stdin.lock().lines();
    let mut ask = |prompt: &str| -> Result<String, String> {
        if interactive {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
        }
        match lines.next() {
            Some(Ok(line)) => Ok(line.trim_end_matches('\r').to_string()),
            Some(Err(e)) => Err(format!("reading the password: {e}")),
            None => Err(String::from("no password on standard input")),
        }
    };
    let password = ask("Password: ")?;
    if interactive && ask("Reenter password: ")? != password {
        return Err(String::from("the passwords do not match"));
    }
    if password.is_empty() {
        return Err(String::from("empty password"));
    }
    Ok(password)
}
