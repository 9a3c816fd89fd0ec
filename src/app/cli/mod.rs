//! The command line: `serve`, `migrate`, `keys ...`, `budgets ...`, `ingest`.

pub mod ingest;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{Application, ProcessRole};
use crate::config::Config;
use crate::infra::telemetry;
use crate::store;

#[derive(Parser)]
#[command(name = "stolid", version, about = "A boring, reliable backend for AI products")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and/or the SQS workers until SIGTERM or Ctrl-C.
    Serve {
        /// `all` runs both in one process; `api` and `worker` split them (same image).
        #[arg(long, value_enum, default_value = "all")]
        role: ProcessRole,
    },
    /// Apply database migrations (serve also does this at start).
    Migrate,
    /// Exit 0 when the local server's /healthz answers (for container health checks:
    /// the runtime image has no curl).
    Healthcheck,
    /// Upload files or folders through the API and follow them until indexed.
    Ingest {
        /// Files or folders (searched recursively for .txt, .md, .html, .pdf).
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
        #[arg(long)]
        collection: Option<String>,
        /// Default: $STOLID_API_URL, else http://127.0.0.1:$PORT (8080).
        #[arg(long)]
        api_url: Option<String>,
        /// Default: $STOLID_API_KEY, else $STOLID_DEV_API_KEY (written by `make up`).
        #[arg(long)]
        api_key: Option<String>,
        /// Uploads in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The three signals for the whole deployment: cold start, retrieval's share
    /// of response time, embedding throughput; each with a verdict.
    Signals {
        /// The window, in seconds back from now.
        #[arg(long, default_value_t = 3600)]
        window_secs: u64,
        /// Print the JSON `GET /v1/ops/signals` gives, for the deployment.
        #[arg(long)]
        json: bool,
    },
    /// Set and list tenants' spend limits (enforced before every model call).
    Budgets {
        #[command(subcommand)]
        command: BudgetsCommand,
    },
}

#[derive(Subcommand)]
enum BudgetsCommand {
    /// Set a tenant's limits; each option given replaces that limit (`none` removes
    /// it), the others stay as they are. Hard limits refuse calls with
    /// `budget_exceeded`; the soft limit only logs its crossing, once a day.
    Set {
        #[arg(long)]
        tenant: String,
        /// Hard limit in USD per UTC day.
        #[arg(long, value_name = "USD|none", value_parser = limit::<f64>)]
        usd_per_day: Option<Limit<f64>>,
        /// Hard limit in USD per UTC calendar month.
        #[arg(long, value_name = "USD|none", value_parser = limit::<f64>)]
        usd_per_month: Option<Limit<f64>>,
        /// Hard limit in tokens (input and output) per UTC day.
        #[arg(long, value_name = "TOKENS|none", value_parser = limit::<i64>)]
        tokens_per_day: Option<Limit<i64>>,
        /// Soft limit in USD per UTC day (a tenant may set a lower one of its own).
        #[arg(long, value_name = "USD|none", value_parser = limit::<f64>)]
        soft_usd_per_day: Option<Limit<f64>>,
    },
    /// List tenants with limits, and what each spent today and this month.
    List,
}

/// A limit given on the command line: a number, or `none` for no limit.
#[derive(Debug, Clone, Copy)]
struct Limit<T>(Option<T>);

fn limit<T>(raw: &str) -> Result<Limit<T>, String>
where
    T: std::str::FromStr + PartialOrd + Default + Copy + Send + Sync + 'static,
{
    if raw.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    match raw.parse::<T>() {
        Ok(value) if value >= T::default() => Ok(Limit(Some(value))),
        _ => Err(format!("expected a number, 0 or more, or `none`; got {raw:?}")),
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key for a tenant (created if needed); prints only the key, once.
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key, given the key itself or its id.
    Revoke { key_or_id: String },
    /// List keys (ids, tenants, prefixes; never the keys).
    List,
    /// Exit 0 and print the tenant when the key is valid, exit 1 otherwise.
    Verify { key: String },
}

/// The database URL alone: admin commands should not need S3 or SQS settings.
fn database_url() -> anyhow::Result<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .context("configuration: DATABASE_URL is required but not set")
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { role } => {
            let config = Config::from_env()?;
            telemetry::init(&config.log_level, std::io::stdout);
            let app = Application::build(config, role, true).await?;
            if let Some(port) = app.port() {
                tracing::info!(port, "listening");
            }
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                crate::app::shutdown_signal().await;
                trigger.cancel();
            });
            app.run(shutdown).await
        }
        Command::Healthcheck => {
            let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
            let response = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(std::time::Duration::from_secs(3))
                .send()
                .await
                .context("calling /healthz")?;
            anyhow::ensure!(response.status().is_success(), "/healthz answered {}", response.status());
            Ok(())
        }
        Command::Ingest { paths, collection, api_url, api_key, concurrency } => {
            telemetry::init("warn", std::io::stderr);
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let api_url = api_url
                .or_else(|| env("STOLID_API_URL"))
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", env("PORT").unwrap_or_else(|| "8080".into())));
            let api_key = api_key
                .or_else(|| env("STOLID_API_KEY"))
                .or_else(|| env("STOLID_DEV_API_KEY"))
                .context("no API key: pass --api-key or set STOLID_API_KEY")?;
            let args = ingest::IngestArgs { paths, collection, api_url, api_key, concurrency };
            if !ingest::run(args).await? {
                anyhow::bail!("some documents failed");
            }
            Ok(())
        }
        Command::Migrate => {
            telemetry::init("warn", std::io::stderr);
            let db = store::connect(&database_url()?, 2, std::time::Duration::from_secs(10), &[]).await?;
            store::MIGRATOR.run(&db).await.context("running migrations")?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Keys { command } => {
            telemetry::init("warn", std::io::stderr);
            let db = store::connect(&database_url()?, 2, std::time::Duration::from_secs(10), &[]).await?;
            store::MIGRATOR.run(&db).await.context("running migrations")?;
            match command {
                KeysCommand::Create { tenant } => {
                    let tenant_id = store::keys::ensure_tenant(&db, &tenant).await?;
                    let created = store::keys::create_key(&db, tenant_id).await?;
                    eprintln!("created key {} for tenant {tenant}; it is shown only once", created.id);
                    println!("{}", created.key);
                }
                KeysCommand::Revoke { key_or_id } => {
                    if !store::keys::revoke(&db, &key_or_id).await? {
                        anyhow::bail!("no active key matches");
                    }
                    eprintln!("revoked");
                }
                KeysCommand::List => {
                    println!("{:<38} {:<20} {:<14} {:<26} revoked", "id", "tenant", "prefix", "created");
                    for k in store::keys::list(&db).await? {
                        let revoked = k.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                        println!(
                            "{:<38} {:<20} {:<14} {:<26} {revoked}",
                            k.id,
                            k.tenant,
                            k.prefix,
                            k.created_at.to_rfc3339()
                        );
                    }
                }
                KeysCommand::Verify { key } => {
                    let tenant = store::keys::tenant_for_key(&db, &key).await?;
                    let Some(tenant_id) = tenant else { anyhow::bail!("key is not valid") };
                    println!("{tenant_id}");
                }
            }
            Ok(())
        }
        Command::Signals { window_secs, json } => {
            telemetry::init("warn", std::io::stderr);
            // The cap the signals compare with is the service's own configuration.
            let config = Config::from_env()?;
            let db = store::connect(&config.database_url, 2, std::time::Duration::from_secs(10), &[]).await?;
            let window = std::time::Duration::from_secs(window_secs.max(1));
            let signals = crate::domain::signals::measure(&db, &config.llm.embedding_limits, None, window).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&signals)?);
            } else {
                print!("{}", crate::domain::signals::report(&signals));
            }
            Ok(())
        }
        Command::Budgets { command } => {
            telemetry::init("warn", std::io::stderr);
            let db = store::connect(&database_url()?, 2, std::time::Duration::from_secs(10), &[]).await?;
            store::MIGRATOR.run(&db).await.context("running migrations")?;
            match command {
                BudgetsCommand::Set { tenant, usd_per_day, usd_per_month, tokens_per_day, soft_usd_per_day } => {
                    let tenant_id = store::keys::tenant_by_name(&db, &tenant)
                        .await?
                        .with_context(|| format!("no tenant named {tenant:?} (`stolid keys create` makes one)"))?;
                    let changes = crate::llm::accounting::budget_rows::LimitChanges {
                        usd_per_day: usd_per_day.map(|l| l.0),
                        usd_per_month: usd_per_month.map(|l| l.0),
                        tokens_per_day: tokens_per_day.map(|l| l.0),
                        soft_usd_per_day: soft_usd_per_day.map(|l| l.0),
                    };
                    crate::llm::accounting::budget_rows::set_limits(&db, tenant_id, &changes).await?;
                    eprintln!(
                        "limits of {tenant} set; they apply to new API requests at once and to indexing jobs as they start"
                    );
                    let rows = crate::llm::accounting::budget_rows::list(&db).await?;
                    print_budgets(&rows.into_iter().filter(|row| row.tenant == tenant).collect::<Vec<_>>());
                }
                BudgetsCommand::List => print_budgets(&crate::llm::accounting::budget_rows::list(&db).await?),
            }
            Ok(())
        }
    }
}

fn print_budgets(rows: &[crate::llm::accounting::budget_rows::Listed]) {
    let usd = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    println!(
        "{:<20} {:>10} {:>12} {:>14} {:>10} {:>12} {:>14} {:>16}",
        "tenant", "usd/day", "usd/month", "tokens/day", "soft/day", "tenant soft", "spent today", "spent this month"
    );
    for row in rows {
        let l = &row.limits;
        println!(
            "{:<20} {:>10} {:>12} {:>14} {:>10} {:>12} {:>14} {:>16}",
            row.tenant,
            usd(l.usd_per_day),
            usd(l.usd_per_month),
            l.tokens_per_day.map_or_else(|| "-".to_string(), |t| t.to_string()),
            usd(l.soft_usd_per_day),
            usd(l.tenant_soft_usd_per_day),
            format!("{:.4}", row.day_spent_usd),
            format!("{:.4}", row.month_spent_usd),
        );
    }
}
