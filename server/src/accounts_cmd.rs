//! `doorstep-server user ...` and `doorstep-server audit ...`: accounts, phones,
//! enrolment codes and the audit log from the command line. Every act is audited with
//! the actor `(command line: $USER)`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use doorstep_server::db::{GridRef, Role, Scope};

use crate::open_existing;

#[derive(Args, Debug, Clone)]
pub struct DataArg {
    /// The data folder: database and blobs.
    #[arg(long, default_value = "./doorstep-data")]
    pub data: PathBuf,
}

/// The scope flags, shared by `user add` and `user role`.
#[derive(Args, Debug, Clone, Default)]
pub struct ScopeArgs {
    /// A grid in the scope (repeat for several), within the one --village given.
    #[arg(long = "grid", requires = "village")]
    grids: Vec<String>,
    /// A village in the scope (repeat for several); with --grid, the grids' village.
    #[arg(long)]
    village: Vec<String>,
    /// A town unit (镇直单位) in the scope, for directives and the bulletin (repeat).
    #[arg(long)]
    unit: Vec<String>,
    /// The whole town.
    #[arg(long, conflicts_with_all = ["grids", "village"])]
    town: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Result<Scope, String> {
        let mut scope = Scope {
            town: self.town,
            units: self.unit.clone(),
            ..Scope::default()
        };
        if !self.grids.is_empty() {
            let [village] = self.village.as_slice() else {
                return Err(
                    "--grid takes exactly one --village: the village the grids are in".into(),
                );
            };
            scope.grids = self
                .grids
                .iter()
                .map(|g| GridRef::new(village, g))
                .collect();
        } else {
            scope.villages = self.village.clone();
        }
        Ok(scope)
    }
}

/// How a password is given.
#[derive(Args, Debug, Clone)]
pub struct PasswordArgs {
    /// Password (8 to 128 characters). Prefer --password-stdin: a flag shows in `ps`.
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

impl PasswordArgs {
    fn read(&self) -> Result<String, String> {
        match (&self.password, self.password_stdin) {
            (Some(p), _) => Ok(p.clone()),
            (None, true) => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| e.to_string())?;
                let line = s.lines().next().unwrap_or("").to_string();
                if line.is_empty() {
                    return Err("no password on standard input".into());
                }
                Ok(line)
            }
            (None, false) => Err("give --password or --password-stdin".into()),
        }
    }
}

fn role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("no role {s:?}; the roles are {}", all.join(", "))
    })
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add an account with a password, a role and a scope.
    Add {
        #[command(flatten)]
        data: DataArg,
        /// Account name.
        #[arg(long)]
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// grid_worker, grid_leader, police, supervisor, liaison, office or admin.
        #[arg(long, default_value = "grid_worker")]
        role: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List accounts with their role, scope, state and phones.
    List {
        #[command(flatten)]
        data: DataArg,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: its web sessions end and its phones stop syncing at once.
    Disable {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        username: String,
    },
    /// Set a new password; the account's web sessions end.
    Reset {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Change an account's role and scope.
    Role {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        username: String,
        /// The new role.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List an account's web sessions and phones, with what each phone had not synced.
    Tokens {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        username: String,
    },
    /// Revoke a phone: it cannot sync from its next request on.
    RevokeDevice {
        #[command(flatten)]
        data: DataArg,
        /// The device ID (see `user tokens`).
        #[arg(long)]
        device: String,
    },
    /// Issue a one-time enrolment code for a person's phone, with its QR payload.
    Enrol {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        username: String,
        /// The address phones reach the server at, e.g. https://doorstep.example.cn.
        #[arg(long)]
        server_url: String,
        /// The server key's pin (`sha256/...`, from `tls-pin`), put in the QR payload.
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Write the audit log as JSON Lines (one entry per line) to standard output.
    Export {
        #[command(flatten)]
        data: DataArg,
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Check the audit log's hash chain and signatures. Exits 0 when it holds, 1 naming
    /// the first broken entry.
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// Also trust entries signed by this earlier server key (64 hex digits, from a
        /// phone's copy of the organisation document or an earlier export); repeatable.
        #[arg(long = "trust-key")]
        trust_keys: Vec<String>,
    },
}

pub(crate) fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    if user.is_empty() {
        "(command line)".into()
    } else {
        format!("(command line: {user})")
    }
}

fn ms_to_text(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Runs a `user` subcommand.
pub fn user(command: UserCommand) -> Result<ExitCode, String> {
    let by = actor();
    let s = |e: doorstep_server::error::Error| e.to_string();
    match command {
        UserCommand::Add {
            data,
            username,
            password,
            role: r,
            scope,
        } => {
            let (password, role, scope) = (password.read()?, role(&r)?, scope.scope()?);
            let db = open_existing(&data.data)?;
            db.add_user(&username, &password, role, &scope, &by)
                .map_err(s)?;
            println!("user {username} added: {role}, {}", scope.describe());
            for part in db.empty_scope_parts(&scope).map_err(s)? {
                eprintln!(
                    "warning: no household in {part} yet; import its roster, or check the spelling"
                );
            }
        }
        UserCommand::List { data, json } => {
            let users = open_existing(&data.data)?.list_users().map_err(s)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&users).map_err(|e| e.to_string())?
                );
            } else {
                for u in users {
                    println!(
                        "{}\t{}\t{}\t{}\t{} phone(s)",
                        u.username,
                        u.role,
                        u.scope.describe(),
                        if u.disabled_at_ms.is_some() {
                            "disabled"
                        } else {
                            "enabled"
                        },
                        u.active_devices
                    );
                }
            }
        }
        UserCommand::Disable { data, username } => {
            open_existing(&data.data)?
                .set_disabled(&username, true, &by)
                .map_err(s)?;
            println!("user {username} disabled; its sessions ended and its phones stopped");
        }
        UserCommand::Enable { data, username } => {
            open_existing(&data.data)?
                .set_disabled(&username, false, &by)
                .map_err(s)?;
            println!("user {username} enabled");
        }
        UserCommand::Reset {
            data,
            username,
            password,
        } => {
            let password = password.read()?;
            open_existing(&data.data)?
                .reset_password(&username, &password, &by)
                .map_err(s)?;
            println!("password of {username} reset; its web sessions ended");
        }
        UserCommand::Role {
            data,
            username,
            role: r,
            scope,
        } => {
            let (role, scope) = (role(&r)?, scope.scope()?);
            open_existing(&data.data)?
                .set_role(&username, role, &scope, &by)
                .map_err(s)?;
            println!("user {username} is now {role}, {}", scope.describe());
        }
        UserCommand::Tokens { data, username } => {
            let t = open_existing(&data.data)?.tokens(&username).map_err(s)?;
            println!("web sessions of {username}:");
            for x in &t.sessions {
                println!(
                    "  session {}: signed in {}, last seen {}, {}",
                    x.id,
                    ms_to_text(Some(x.created_at_ms)),
                    ms_to_text(Some(x.last_seen_ms)),
                    match x.revoked_at_ms {
                        Some(_) => "ended".to_string(),
                        None => format!("ends by {}", ms_to_text(Some(x.expires_at_ms))),
                    }
                );
            }
            println!("phones of {username}:");
            for d in &t.devices {
                print_device(d);
            }
        }
        UserCommand::RevokeDevice { data, device } => {
            let d = open_existing(&data.data)?
                .revoke_device(&device, &by)
                .map_err(s)?;
            println!("revoked:");
            print_device(&d);
        }
        UserCommand::Enrol {
            data,
            username,
            server_url,
            pin,
        } => {
            let e = open_existing(&data.data)?
                .issue_enrolment(&username, &by, &server_url, pin.as_deref())
                .map_err(s)?;
            println!("enrolment code for {username}: {}", e.code);
            println!("valid until {}, once", ms_to_text(Some(e.expires_at_ms)));
            println!("QR payload: {}", e.qr_payload);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_device(d: &doorstep_server::db::accounts::DeviceInfo) {
    println!(
        "  {} (enrolled by {} {}): last sync {}, {}",
        d.device_id,
        d.enrolled_via,
        ms_to_text(Some(d.created_at_ms)),
        ms_to_text(d.last_sync_ms),
        match (&d.revoked_at_ms, &d.revoked_by) {
            (Some(at), by) => format!(
                "REVOKED {} by {}",
                ms_to_text(Some(*at)),
                by.as_deref().unwrap_or("?")
            ),
            _ => "active".into(),
        }
    );
    match &d.outbox {
        Some(o) => println!(
            "    unsynced at its last sync ({}): {} change(s) in {} household(s), {} photo(s) or signature(s)",
            ms_to_text(d.outbox_at_ms),
            o.changes,
            o.households,
            o.blobs
        ),
        None => println!("    has not reported what it holds unsynced"),
    }
    println!(
        "    visits it started and has not finished: {}; pushes tried after revocation: {} ({} change(s), kept unapplied)",
        d.open_visits, d.pushes_after_revocation, d.changes_after_revocation
    );
}

/// Runs an `audit` subcommand.
pub fn audit(command: AuditCommand) -> Result<ExitCode, String> {
    match command {
        AuditCommand::Export { data, after } => {
            let db = open_existing(&data.data)?;
            let mut after = after;
            let mut out = std::io::stdout().lock();
            loop {
                let batch = db.audit_entries(after, 1000).map_err(|e| e.to_string())?;
                if batch.is_empty() {
                    break;
                }
                for e in &batch {
                    use std::io::Write;
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(e).map_err(|e| e.to_string())?
                    )
                    .map_err(|e| e.to_string())?;
                    after = e.seq;
                }
            }
            open_existing(&data.data)?
                .audit(
                    &actor(),
                    None,
                    "audit_exported",
                    "audit_log",
                    serde_json::json!({"after": after}),
                )
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { data, trust_keys } => {
            let keys = trust_keys
                .iter()
                .map(|k| {
                    doorstep_core::evidence::parse_sha256(k)
                        .ok_or_else(|| format!("--trust-key {k} is not 64 hex digits"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            audit_verify(&data, &keys)
        }
    }
}

fn audit_verify(data: &DataArg, keys: &[[u8; 32]]) -> Result<ExitCode, String> {
    match open_existing(&data.data)?.verify_audit(keys) {
        Ok(n) => {
            println!("the audit log holds: {n} entries, chain intact");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("BROKEN: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
