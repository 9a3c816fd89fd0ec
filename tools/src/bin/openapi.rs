//! Prints the OpenAPI document stolid serves at `/openapi.json`, pretty, for
//! `make openapi` to commit as `docs/openapi.json` (the HTTP API reference a
//! reader or a client generator can take without running the server).

fn main() -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&stolid::api::openapi())?);
    Ok(())
}
