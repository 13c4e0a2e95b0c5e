//! `doorstep-server`: the command line over the server library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use doorstep_core::model::{EvidenceKind, HouseholdId};
use doorstep_server::db::ServerDb;
use doorstep_server::{demo, http, roster, verify};

mod accounts_cmd;
use accounts_cmd::DataArg;

#[derive(Parser, Debug)]
#[command(
    name = "doorstep-server",
    version,
    about = "Doorstep's central server: sync, blobs, rosters, accounts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Serving HTTPS directly: both files, or neither for plain HTTP behind a reverse proxy.
#[derive(Args, Debug, Clone)]
struct TlsArgs {
    /// The server's certificate chain (PEM, its own certificate first): serve HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The loaded certificate and key, or `None` for plain HTTP.
    fn load(&self) -> Result<Option<doorstep_server::tls::TlsSetup>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => doorstep_server::tls::load(cert, key).map(Some),
            (None, None) => Ok(None),
            _ => Err("give both --tls-cert and --tls-key, or neither".into()),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the sync API: HTTPS with --tls-cert and --tls-key, else plain HTTP (behind a
    /// reverse proxy that terminates TLS).
    Serve {
        #[command(flatten)]
        data: DataArg,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        tls: TlsArgs,
        /// A reverse proxy is in front: take a client's address from the last
        /// X-Forwarded-For hop, which the proxy sets.
        #[arg(long)]
        behind_proxy: bool,
        /// The address phones reach the server at (e.g. https://doorstep.example.cn),
        /// put in enrolment QR codes; without it, the office request's own address.
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Print the pin of a TLS certificate's key, `sha256/<base64>` (RFC 7469), to give
    /// to the phones.
    TlsPin {
        /// The certificate (PEM; the first one in the file).
        #[arg(long)]
        cert: PathBuf,
    },
    /// Import a village roster (.xlsx, or .csv in UTF-8 or GBK) as household documents.
    ImportRoster {
        #[command(flatten)]
        data: DataArg,
        /// Print one JSON object instead of a report.
        #[arg(long)]
        json: bool,
        /// The roster file.
        file: PathBuf,
    },
    /// Import the responsible persons of villages and units (.xlsx: first responsible
    /// person, responsible person, liaison, lecturers, population), and list each
    /// village and unit short of lecturers (one per 1,000 people, at least one).
    ImportPlaces {
        #[command(flatten)]
        data: DataArg,
        /// Print one JSON object instead of a report.
        #[arg(long)]
        json: bool,
        /// The responsible-persons workbook.
        file: PathBuf,
    },
    /// Manage accounts, phones and enrolment codes.
    User {
        #[command(subcommand)]
        command: accounts_cmd::UserCommand,
    },
    /// Export or check the audit log.
    Audit {
        #[command(subcommand)]
        command: accounts_cmd::AuditCommand,
    },
    /// Re-verify every signed notice and pledge: records, device signatures, blob
    /// hashes, the hash-chained evidence log and the household documents. Exits 0 when
    /// all holds, 1 naming the first broken record or link, 2 when it cannot run.
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// Check only this household's records, blobs and document (the whole chain is
        /// still checked).
        #[arg(long)]
        household: Option<String>,
    },
    /// Households: move one to another grid.
    Household {
        #[command(subcommand)]
        command: HouseholdCommand,
    },
    /// Notice and pledge templates, carried to the phones in the organisation document.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Start a fresh server with a generated demo village and two simulated phones.
    Demo {
        #[command(flatten)]
        data: DataArg,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

#[derive(Subcommand, Debug)]
enum HouseholdCommand {
    /// Move a household to another grid (audited). At their next sync the phones of the
    /// new grid receive it whole and those of the old grid delete it, once what they
    /// recorded there has reached the server. Safe while the server runs.
    Move {
        #[command(flatten)]
        data: DataArg,
        /// The household's ID (a UUID).
        #[arg(long)]
        household: String,
        /// The village it moves to (the same one, for a move between its grids).
        #[arg(long)]
        village: String,
        /// The grid it moves to.
        #[arg(long)]
        grid: String,
    },
}

#[derive(Subcommand, Debug)]
enum TemplateCommand {
    /// List every template and version, marking the version in force today.
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Publish the next version of a template from a UTF-8 text file whose first line
    /// is the title and the rest the body.
    Publish {
        #[command(flatten)]
        data: DataArg,
        /// Template ID: `notice`, `pledge`, or another of a-z, 0-9 and -.
        #[arg(long)]
        id: String,
        /// `notice` (告知书) or `pledge` (承诺书).
        #[arg(long)]
        kind: String,
        /// First day in force, YYYY-MM-DD, town time (UTC+08:00).
        #[arg(long)]
        effective_from: String,
        /// The text file.
        file: PathBuf,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Opens a data folder that must already hold a database: a mistyped --data must not
/// quietly make a new, empty one.
fn open_existing(dir: &std::path::Path) -> Result<ServerDb, String> {
    if !dir.join("doorstep.db").exists() {
        return Err(format!(
            "no Doorstep data in {} (no doorstep.db there): check --data, or create it with `serve` or `import-roster`",
            dir.display()
        ));
    }
    ServerDb::open(dir).map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// `import-places`: reads the workbook, stores its good rows as the office (the
/// command line acts for the town office), and reports the rows refused and the places
/// short of lecturers.
fn import_places(data: &DataArg, json: bool, file: &std::path::Path) -> Result<ExitCode, String> {
    use doorstep_server::access::{Principal, Role, Scope};
    let import = doorstep_server::places::read_places(file).map_err(|e| e.to_string())?;
    let db = ServerDb::open(&data.data).map_err(|e| e.to_string())?;
    let office = Principal {
        user_id: 0,
        username: accounts_cmd::actor(),
        role: Role::Office,
        scope: Scope::town(),
    };
    let outcome = db
        .import_places(&office, &import.places)
        .map_err(|e| e.to_string())?;
    let short: Vec<serde_json::Value> = import
        .short_of_lecturers()
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "population": p.population,
                "lecturers_required": p.lecturers_required(),
                "lecturers_named": p.lecturers_named(),
            })
        })
        .collect();
    if json {
        let out = serde_json::json!({
            "places": import.places.len(),
            "villages": import.places.iter().filter(|p| p.kind == doorstep_server::places::PlaceKind::Village).count(),
            "created": outcome.created,
            "updated": outcome.updated,
            "row_errors": import.row_errors,
            "short_of_lecturers": short,
        });
        println!("{out}");
    } else {
        let villages = import
            .places
            .iter()
            .filter(|p| p.kind == doorstep_server::places::PlaceKind::Village)
            .count();
        println!(
            "{}: {} villages and units ({} villages, {} units; {} new, {} updated), {} rows not imported, {} short of lecturers",
            file.display(),
            import.places.len(),
            villages,
            import.places.len() - villages,
            outcome.created,
            outcome.updated,
            import.row_errors.len(),
            short.len()
        );
        for e in &import.row_errors {
            println!("  line {}: {} — {}", e.line, e.name, e.reason);
        }
        for p in import.short_of_lecturers() {
            println!(
                "  short of lecturers: {} — population {}, needs {}, names {}",
                p.name,
                p.population,
                p.lecturers_required(),
                p.lecturers_named()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve {
            data,
            listen,
            tls,
            behind_proxy,
            public_url,
        } => {
            let tls = tls.load()?;
            if !data.data.join("doorstep.db").exists() {
                eprintln!(
                    "no data in {} yet: starting a new, empty data folder",
                    data.data.display()
                );
            }
            let db = Arc::new(ServerDb::open(&data.data).map_err(|e| e.to_string())?);
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                // One line, which tests and scripts read: where, and the key's pin.
                match &tls {
                    None => println!(
                        "doorstep-server listening on http://{addr} (data in {})",
                        data.data.display()
                    ),
                    Some(tls) => println!(
                        "doorstep-server listening on https://{addr} (data in {}; key pin {})",
                        data.data.display(),
                        tls.pin
                    ),
                }
                let options = http::ServeOptions {
                    pin: tls.as_ref().map(|t| t.pin.clone()),
                    tls: tls.map(|t| t.config),
                    behind_proxy,
                    public_url,
                };
                http::serve(listener, db, options)
                    .await
                    .map_err(|e| e.to_string())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::TlsPin { cert } => {
            println!("{}", doorstep_server::tls::pin_of_file(&cert)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportRoster { data, json, file } => {
            let roster = roster::read_roster(&file).map_err(|e| e.to_string())?;
            if let Some(h) = roster.households.iter().find(|h| h.village.is_empty()) {
                return Err(format!(
                    "{}: cannot tell which village household {} is in: give the roster a title row such as \"东坡村户籍人员花名册\", or name the village in the grid column (\"东坡村第1网格\")",
                    file.display(),
                    h.door_number
                ));
            }
            let db = ServerDb::open(&data.data).map_err(|e| e.to_string())?;
            let outcome = db
                .import_households(&roster.households)
                .map_err(|e| e.to_string())?;
            if json {
                let out = serde_json::json!({
                    "households": roster.households.len(),
                    "residents_imported": roster.residents_imported,
                    "row_errors": roster.row_errors,
                    "households_created": outcome.created,
                    "households_already_present": outcome.existing,
                    "residents_added_to_existing": outcome.residents_added,
                });
                println!("{out}");
            } else {
                println!(
                    "{}: {} households ({} new, {} already present, {} residents added to those), {} residents read, {} rows not imported",
                    file.display(),
                    roster.households.len(),
                    outcome.created,
                    outcome.existing,
                    outcome.residents_added,
                    roster.residents_imported,
                    roster.row_errors.len()
                );
                for e in &roster.row_errors {
                    println!("  line {}: {} — {}", e.line, e.name, e.reason);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportPlaces { data, json, file } => import_places(&data, json, &file),
        Command::User { command } => accounts_cmd::user(command),
        Command::Audit { command } => accounts_cmd::audit(command),
        Command::Verify { data, household } => {
            let household = household
                .map(|h| {
                    HouseholdId::parse(&h).ok_or_else(|| format!("--household {h} is not a UUID"))
                })
                .transpose()?;
            match verify::verify(&data.data, household).map_err(|e| e.to_string())? {
                Ok(report) => {
                    println!("{report}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    println!("BROKEN: {broken}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Household {
            command:
                HouseholdCommand::Move {
                    data,
                    household,
                    village,
                    grid,
                },
        } => {
            let id = HouseholdId::parse(&household)
                .ok_or_else(|| format!("--household {household} is not a UUID"))?;
            let db = open_existing(&data.data)?;
            let from = db
                .household_doc(id)
                .map_err(|e| e.to_string())?
                .and_then(|doc| doorstep_core::model::read_household(&doc).ok())
                .map(|h| format!("{}/{}", h.village, h.grid));
            db.move_household(id, &village, &grid, &accounts_cmd::actor())
                .map_err(|e| e.to_string())?;
            println!(
                "household {id} moved from {} to {}/{}",
                from.unwrap_or_else(|| "?".into()),
                village.trim(),
                grid.trim()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Template {
            command: TemplateCommand::List { data },
        } => {
            let db = open_existing(&data.data)?;
            let org = db.organisation().map_err(|e| e.to_string())?;
            let now = doorstep_core::store::now_ms();
            for (id, t) in &org.templates {
                let in_force = org.template_in_force(id, now).map(|v| v.version);
                for v in t.versions.values() {
                    println!(
                        "{id} ({}) version {} from {}{}: {}  sha256 {}",
                        t.kind.as_str(),
                        v.version,
                        v.effective_from,
                        if in_force == Some(v.version) {
                            ", in force"
                        } else {
                            ""
                        },
                        v.title,
                        v.text_sha256
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Template {
            command:
                TemplateCommand::Publish {
                    data,
                    id,
                    kind,
                    effective_from,
                    file,
                },
        } => {
            let kind = EvidenceKind::parse(&kind)
                .ok_or_else(|| format!("--kind {kind}: give notice or pledge"))?;
            let bytes = std::fs::read(&file)
                .map_err(|e| format!("could not read {}: {e}", file.display()))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{} is not UTF-8 text", file.display()))?;
            let (title, body) = doorstep_server::db::evidence::split_template(&text);
            let db = open_existing(&data.data)?;
            let v = db
                .publish_template(&id, kind, &title, &body, &effective_from)
                .map_err(|e| e.to_string())?;
            let today = db
                .organisation()
                .map_err(|e| e.to_string())?
                .template_in_force(&id, doorstep_core::store::now_ms())
                .map(|t| t.version);
            println!(
                "{id} version {} published, effective from {}; text sha256 {}; in force today: {}",
                v.version,
                v.effective_from,
                v.text_sha256,
                today.map_or("no version".to_string(), |n| format!("version {n}"))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { data, listen, tls } => {
            let tls = tls.load()?;
            runtime()?
                .block_on(demo::run(data.data, listen, tls))
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
