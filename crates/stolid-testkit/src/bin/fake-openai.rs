//! `fake-openai --port 9999 [--latency-ms 50] [--rpm 600] [--tpm 1000000]`: the test
//! suite's fake OpenAI-compatible server as a process, for benchmarks and for
//! trying stolid's `openai` provider offline. `GET /stats` reports counters.

use std::time::Duration;

use clap::Parser;
use stolid_testkit::fake_openai::{BucketCaps, FakeOpenAi};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 9999)]
    port: u16,
    /// Added to every response.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Embedding requests per minute, enforced as a bucket of one second's worth (as OpenAI does).
    #[arg(long)]
    rpm: Option<u32>,
    /// Embedding tokens per minute, enforced the same way.
    #[arg(long)]
    tpm: Option<u32>,
    /// Default embedding dimension when a request names none.
    #[arg(long, default_value_t = 384)]
    dimensions: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeOpenAi::start_on(args.port).await?;
    fake.set_latency(Duration::from_millis(args.latency_ms));
    fake.set_bucket_caps(BucketCaps { requests_per_minute: args.rpm, tokens_per_minute: args.tpm });
    fake.set_default_dimensions(args.dimensions);
    eprintln!("fake OpenAI server on {}", fake.base_url());
    tokio::signal::ctrl_c().await?;
    eprintln!("{}", serde_json::to_string(&fake.stats())?);
    Ok(())
}
