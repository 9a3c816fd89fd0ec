//! Builds the application state once and runs the API and/or the workers until
//! shutdown.

pub mod cli;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::Config;
use crate::domain::state::AppState;
use crate::infra::blob::Blobs;
use crate::infra::queue::Queue;
use crate::llm::Gateway;
use crate::llm::accounting::usage::UsageRecorder;
use crate::store;
use crate::worker;

/// Which parts of stolid this process runs: the same image can be split into an
/// API service and a worker service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessRole {
    All,
    Api,
    Worker,
}

pub struct Application {
    state: AppState,
    listener: Option<TcpListener>,
    usage_writer: tokio::task::JoinHandle<()>,
    role: ProcessRole,
}

impl Application {
    /// Connects, migrates, prepares the embedding index and binds the port
    /// (`config.port`, 0 for any free port).
    pub async fn build(config: Config, role: ProcessRole, usage_log: bool) -> anyhow::Result<Self> {
        // Migrations and the embedding index may run for minutes on a large
        // database: on a connection of their own, without the pool's statement timeout.
        let setup = store::connect(&config.database_url, 1, config.database_acquire_timeout, &[]).await?;
        store::MIGRATOR.run(&setup).await.context("running migrations")?;
        store::embeddings::ensure_index(&setup, &config.llm.embedding_model, config.llm.embedding_dimensions)
            .await
            .context("creating the embedding index")?;
        setup.close().await;
        let mut session = store::search_session(config.hnsw_ef_search);
        session.push(store::statement_timeout(config.database_statement_timeout));
        let db = store::connect(
            &config.database_url,
            config.database_max_connections,
            config.database_acquire_timeout,
            &session,
        )
        .await?;
        let sdk = crate::infra::aws::sdk_config(&config.aws).await;
        let blobs = Blobs::new(&sdk, config.aws.endpoint_url.is_some(), &config.s3_bucket, config.aws.call_timeout);
        let queue = Queue::new(&sdk, &config.sqs_queue_url, config.aws.call_timeout);
        let (recorder, usage_writer) = UsageRecorder::spawn(db.clone(), usage_log);
        let gateway = Arc::new(Gateway::new(config.llm.clone(), recorder, db.clone())?);
        let listener = if role == ProcessRole::Worker {
            None
        } else {
            let addr = SocketAddr::from(([0, 0, 0, 0], config.port));
            Some(TcpListener::bind(addr).await.with_context(|| format!("binding port {}", config.port))?)
        };
        tracing::info!(
            provider = gateway.provider_name(),
            chat_model = gateway.chat_model(),
            embedding_model = gateway.embedding_model(),
            role = ?role,
            "stolid ready"
        );
        if gateway.provider_name() == "local" {
            let embeddings = if gateway.hashed_embeddings_reason().is_some() {
                "hashed embeddings"
            } else {
                "a local embedding model"
            };
            tracing::warn!("no OPENAI_API_KEY: using the built-in local provider ({embeddings}, extractive answers)");
        }
        let state =
            AppState { db, blobs, queue, gateway, config: Arc::new(config), streams_end: CancellationToken::new() };
        Ok(Self { state, listener, usage_writer, role })
    }

    pub fn port(&self) -> Option<u16> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains: stops accepting, lets
    /// in-flight requests and jobs finish (or releases jobs' messages) within the
    /// configured deadline, and flushes pending usage rows.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application { state, listener, usage_writer, role } = self;
        let deadline = state.config.shutdown_timeout;
        let api = listener.map(|listener| {
            let router = api::router(state.clone());
            let stop = shutdown.clone();
            tokio::spawn(
                async move { axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await },
            )
        });
        let workers = (role != ProcessRole::Api).then(|| {
            tokio::spawn(worker::sweeper::run(state.clone(), shutdown.clone()));
            // Jobs get 70% of the deadline, then their messages are released.
            tokio::spawn(worker::run(state.clone(), shutdown.clone(), deadline.mul_f64(0.7)))
        });
        shutdown.cancelled().await;
        // Everything below fits in the deadline, so the process always exits
        // within SHUTDOWN_TIMEOUT_SECS (ECS's stopTimeout is set above it).
        let stop_by = tokio::time::Instant::now() + deadline.mul_f64(0.95);
        tracing::info!(deadline_s = deadline.as_secs(), "shutting down");
        // Streams get half the deadline to finish on their own, then end cleanly,
        // which leaves the other half for their connections to close and their
        // usage rows to be written.
        let streams_end = state.streams_end.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline.mul_f64(0.5)).await;
            streams_end.cancel();
        });
        let drain = async {
            if let Some(api) = api {
                match api.await {
                    Ok(Err(err)) => tracing::error!(error = %err, "HTTP server failed"),
                    Err(err) => tracing::error!(error = %err, "HTTP server task failed"),
                    Ok(Ok(())) => {}
                }
            }
            if let Some(workers) = workers {
                let _ = workers.await;
            }
        };
        if tokio::time::timeout(deadline.mul_f64(0.85), drain).await.is_err() {
            tracing::warn!("in-flight work did not finish before the shutdown deadline");
        }
        let recorder = state.gateway.recorder().clone();
        if tokio::time::timeout_at(stop_by, recorder.flush()).await.is_err() {
            tracing::warn!("usage rows not flushed before the deadline; they remain in the logs");
        }
        drop(recorder);
        drop(state);
        // The writer ends when the last recorder handle is gone; in-flight
        // request tasks may still hold one, so do not wait for it past the deadline.
        let _ = tokio::time::timeout_at(stop_by, usage_writer).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM (what ECS sends on stop).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
