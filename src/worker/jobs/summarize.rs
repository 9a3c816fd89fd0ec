//! `summarize_document`: a short summary of an indexed document, written to
//! `documents.summary`, through the model gateway (so it is metered like every call).

use anyhow::Context;
use uuid::Uuid;

use super::JobError;
use crate::domain::state::AppState;
use crate::llm::{CallContext, ChatMessage, ChatRequest, LlmError, Task};
use crate::store::documents::DocumentStatus;
use crate::store::{chunks, documents};

/// Document text sent to the model at most, in tokens.
const INPUT_BUDGET: i32 = 6_000;

pub async fn run(state: &AppState, tenant_id: Uuid, document_id: Uuid) -> Result<(), JobError> {
    let Some(doc) = documents::get(&state.db, tenant_id, document_id).await.context("loading the document")? else {
        return Ok(()); // deleted since
    };
    match doc.status {
        DocumentStatus::Indexed => {}
        // Not ready yet: let SQS redeliver after the visibility timeout.
        DocumentStatus::Queued | DocumentStatus::Processing => {
            return Err(JobError::Retry(anyhow::anyhow!("document not indexed yet")));
        }
        DocumentStatus::Failed => {
            return Err(JobError::Unprocessable("document failed to index; nothing to summarize".into()));
        }
    }
    let all =
        chunks::list_for_document(&state.db, tenant_id, document_id, -1, 10_000).await.context("loading chunks")?;
    let mut used = 0;
    let mut context = String::new();
    for (n, chunk) in all.iter().enumerate() {
        if used + chunk.token_count > INPUT_BUDGET && n > 0 {
            break;
        }
        used += chunk.token_count;
        context.push_str(&format!("\n[{}] {}\n", n + 1, chunk.content));
    }
    let request = ChatRequest {
        task: Task::Summarize,
        messages: vec![
            ChatMessage::system(format!(
                "Summarize the document below in 3 to 5 sentences, using only its content. \
                 Say what it is about and its main points. No preamble.\n\nDocument \"{}\":\n{context}",
                doc.title
            )),
            ChatMessage::user(format!("Summarize \"{}\".", doc.title)),
        ],
        max_tokens: Some(300),
        temperature: Some(0.2),
        ..Default::default()
    };
    let ctx = CallContext {
        tenant_id: Some(tenant_id),
        request_id: None,
        conversation_id: None,
        endpoint: "worker.summarize",
        budgeted: crate::llm::accounting::budget_rows::is_budgeted(&state.db, tenant_id)
            .await
            .context("reading the budget")?,
        meter: None,
        cap_wait: None,
    };
    let response = state.gateway.chat(&ctx, &request).await.map_err(|err| match err {
        LlmError::QuotaExhausted(m) => JobError::Unprocessable(format!("quota exhausted: {m}")),
        LlmError::BudgetExceeded(exceeded) => JobError::Deferred {
            delay: crate::infra::queue::MAX_DELAY.min(std::time::Duration::from_secs(exceeded.retry_after_secs())),
            reason: exceeded.to_string(),
        },
        other => JobError::Retry(other.into()),
    })?;
    documents::set_summary(&state.db, tenant_id, document_id, response.content.trim())
        .await
        .context("storing the summary")?;
    tracing::info!(
        input_tokens = response.usage.input_tokens,
        output_tokens = response.usage.output_tokens,
        "document summarized"
    );
    Ok(())
}
