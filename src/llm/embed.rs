//! Embeddings through the gateway: bulk inputs join the process's batch
//! queue (`batcher`), a search's query goes in the query lane (`query_groups`)
//! with a per-process cache; each request is split under the provider's limits
//! and paced by the fleet's limiter.

use std::sync::Arc;

use super::accounting::budget;
use super::accounting::usage::Operation;
use super::batcher::{BatchLimits, Pending, answer_all};
use super::limiter::Lane;
use super::{Attempt, CallContext, Embeddings, Gateway, LlmError, Paced, Pacing, batcher, query_groups};
use crate::infra::tokens::count_tokens;

impl Gateway {
    /// Embeds `inputs` with the configured model, for bulk work (indexing):
    /// they join the process's batch queue with every other job's, and come
    /// back in order.
    pub async fn embed(self: &Arc<Self>, ctx: &CallContext, inputs: &[String]) -> Result<Embeddings, LlmError> {
        let tokens = inputs.iter().map(|t| count_tokens(t)).collect();
        self.embed_counted(ctx, inputs, tokens).await
    }

    /// Holds room in the tenant's budget for embedding `tokens` with the
    /// configured model, if the tenant has limits, until the guard is dropped:
    /// for work cut into several calls (a large document's slices) that must
    /// fit as a whole, whose calls then run with `budgeted: false`.
    pub async fn reserve_embedding(
        &self,
        ctx: &CallContext,
        tokens: usize,
    ) -> Result<Option<budget::Reservation>, LlmError> {
        self.reserve(ctx, || self.embedding_estimate(&self.config.embedding_model, tokens)).await
    }

    /// [`Self::embed`] for inputs whose token counts the caller has already
    /// (`tokens[i]` is `count_tokens(&inputs[i])`).
    pub async fn embed_counted(
        self: &Arc<Self>,
        ctx: &CallContext,
        inputs: &[String],
        tokens: Vec<usize>,
    ) -> Result<Embeddings, LlmError> {
        assert_eq!(tokens.len(), inputs.len(), "one token count per input");
        let limits = &self.config.embedding_limits;
        if let Some((index, &n)) = tokens.iter().enumerate().find(|(_, n)| **n > limits.max_input_tokens) {
            return Err(LlmError::InputTooLong { index, tokens: n, max: limits.max_input_tokens });
        }
        let _reservation =
            self.reserve(ctx, || self.embedding_estimate(&self.config.embedding_model, tokens.iter().sum())).await?;
        let queue = self.batches.sender(self, self.batch_limits());
        let now = tokio::time::Instant::now();
        let caller = batcher::next_caller();
        let stopped = || LlmError::Unavailable("the embedding queue has stopped".into());
        let mut replies = Vec::with_capacity(inputs.len());
        for (text, &tokens) in inputs.iter().zip(&tokens) {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let ticket = ctx.cap_wait.as_ref().map(|wait| wait.enter()).unwrap_or_default();
            let item = Pending { caller, ctx: ctx.clone(), text: text.clone(), tokens, enqueued: now, ticket, reply };
            queue.send(item).map_err(|_| stopped())?;
            replies.push(rx);
        }
        let mut out = Embeddings {
            vectors: Vec::with_capacity(inputs.len()),
            model: self.config.embedding_model.clone(),
            input_tokens: tokens.iter().sum::<usize>() as u32,
            requests: 0,
        };
        let mut requests_seen = std::collections::HashSet::new();
        for rx in replies {
            let embedded = rx.await.map_err(|_| stopped())??;
            if requests_seen.insert(embedded.request) {
                out.requests += embedded.attempts;
            }
            out.vectors.push(embedded.vector);
        }
        Ok(out)
    }

    /// Embeds one query (search, chat) at once, ahead of bulk work, with
    /// `model`: while documents are re-indexed to a new model, queries are
    /// embedded with the old one too, to search the old vectors. A query
    /// embedded recently is answered from the process's cache, with no call;
    /// queries that find every in-flight slot taken share requests
    /// ([`query_groups`]).
    pub async fn embed_query(
        self: &Arc<Self>,
        ctx: &CallContext,
        model: &str,
        dims: usize,
        text: &str,
    ) -> Result<Vec<f32>, LlmError> {
        let key = (model.to_string(), dims, text.to_string());
        if let Some(cache) = &self.query_embeddings
            && let Some(vector) = cache.lock().unwrap().get(&key)
        {
            return Ok(vector.clone());
        }
        let asked = tokio::time::Instant::now();
        let max = self.config.embedding_limits.max_input_tokens;
        let tokens = count_tokens(text);
        if tokens > max {
            return Err(LlmError::InputTooLong { index: 0, tokens, max });
        }
        let _reservation = self.reserve(ctx, || self.embedding_estimate(model, tokens)).await?;
        let vector = match self.limiter.try_slot(Lane::Query) {
            Some(_slot) => {
                let shares = [(ctx.clone(), tokens)];
                let (mut vectors, _) =
                    self.embed_request(&shares, model, dims, &[text.to_string()], tokens, Paced::Query, asked).await?;
                vectors.swap_remove(0)
            }
            None => query_groups::embed_in_group(self, model, dims, ctx, text, tokens).await?,
        };
        if let Some(cache) = &self.query_embeddings {
            cache.lock().unwrap().put(key, vector.clone());
        }
        Ok(vector)
    }

    /// How full one embedding request may be.
    pub(super) fn batch_limits(&self) -> BatchLimits {
        BatchLimits { inputs: self.config.embedding_limits.max_batch_inputs, tokens: self.max_tokens_per_request() }
    }

    /// The most tokens one embedding request carries: the provider's limit, or
    /// the fleet's token burst if smaller.
    pub(super) fn max_tokens_per_request(&self) -> usize {
        self.config.embedding_limits.max_batch_tokens.min(self.limiter.max_tokens_per_call())
    }

    /// Sends one cut batch and answers each input's caller. If the provider
    /// refuses the batch, each caller's inputs are sent again on their own: an
    /// input it rejects must fail only the job it came from, not its batch-mates.
    pub(super) async fn send_bulk(&self, batch: Vec<Pending>, request: u64) {
        let callers: std::collections::HashSet<u64> = batch.iter().map(|p| p.caller).collect();
        let batch = match self.send_batch(batch, request, Paced::AlreadyOnce).await {
            Err((LlmError::Refused(_) | LlmError::Provider(_), batch)) if callers.len() > 1 => batch,
            Err((err, batch)) => return answer_all(batch, &err),
            Ok(()) => return,
        };
        let mut groups: Vec<Vec<Pending>> = Vec::new();
        for item in batch {
            match groups.iter_mut().find(|g| g[0].caller == item.caller) {
                Some(group) => group.push(item),
                None => groups.push(vec![item]),
            }
        }
        for group in groups {
            if let Err((err, group)) = self.send_batch(group, request, Paced::Bulk).await {
                answer_all(group, &err);
            }
        }
    }

    /// One request for `batch`; on failure the inputs come back unanswered.
    pub(super) async fn send_batch(
        &self,
        batch: Vec<Pending>,
        request: u64,
        paced: Paced,
    ) -> Result<(), (LlmError, Vec<Pending>)> {
        let (model, dims) = (self.config.embedding_model.clone(), self.config.embedding_dimensions);
        let tokens: usize = batch.iter().map(|p| p.tokens).sum();
        let mut shares: Vec<(CallContext, usize)> = Vec::new();
        for item in &batch {
            match shares.iter_mut().find(|(ctx, _)| same_caller(ctx, &item.ctx)) {
                Some((_, n)) => *n += item.tokens,
                None => shares.push((item.ctx.clone(), item.tokens)),
            }
        }
        let texts: Vec<String> = batch.iter().map(|p| p.text.clone()).collect();
        let waiting_since = batch.iter().map(|p| p.enqueued).min().unwrap_or_else(tokio::time::Instant::now);
        match self.embed_request(&shares, &model, dims, &texts, tokens, paced, waiting_since).await {
            Ok((vectors, attempts)) => {
                for (item, vector) in batch.into_iter().zip(vectors) {
                    let _ = item.reply.send(Ok(batcher::Embedded { vector, request, attempts }));
                }
                Ok(())
            }
            Err(err) => Err((err, batch)),
        }
    }

    /// One provider request (with retries) for inputs that fit its limits.
    /// Success is recorded once per caller in `shares`, with that caller's
    /// part of the provider's token count; failed attempts once, for the first.
    /// `waiting_since`: when its inputs were asked for, so the record says how
    /// long the limiter held them.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn embed_request(
        &self,
        shares: &[(CallContext, usize)],
        model: &str,
        dims: usize,
        inputs: &[String],
        estimated_tokens: usize,
        paced: Paced,
        waiting_since: tokio::time::Instant,
    ) -> Result<(Vec<Vec<f32>>, u32), LlmError> {
        let queued = waiting_since.elapsed();
        let attempts = self.config.embedding_limits.max_attempts;
        let (lane, first_done) = match paced {
            Paced::Query => (Lane::Query, false),
            Paced::Bulk => (Lane::Bulk, false),
            Paced::AlreadyOnce => (Lane::Bulk, true),
        };
        let pacing = Pacing::SharedLimiter { tokens: estimated_tokens, lane, first_done };
        let ((vectors, input_tokens), latency, tries, paced_for) = self
            .retrying(&shares[0].0, Operation::Embed, model, attempts, pacing, || {
                self.provider.embed(model, dims, inputs, estimated_tokens)
            })
            .await?;
        let mut left = input_tokens;
        for (i, (ctx, share)) in shares.iter().enumerate() {
            let part = if i + 1 == shares.len() {
                left
            } else {
                (input_tokens as f64 * *share as f64 / estimated_tokens.max(1) as f64).round() as u32
            };
            let part = part.min(left);
            left -= part;
            let attempt =
                Attempt { wait: queued + paced_for, ..Attempt::succeeded(Operation::Embed, model, latency, part, 0) };
            self.record(ctx, attempt);
        }
        if let Some(bad) = vectors.iter().find(|v| v.len() != dims) {
            return Err(LlmError::Provider(format!(
                "model {model} returned {} dimensions but EMBEDDING_DIMENSIONS is {dims}",
                bad.len()
            )));
        }
        Ok((vectors, tries))
    }

    pub(super) fn embedding_estimate(&self, model: &str, tokens: usize) -> budget::Estimate {
        let input = (tokens as f64 * budget::ESTIMATE_MARGIN).ceil() as u32;
        budget::Estimate { usd: self.config.prices.cost_usd(model, input, 0), tokens: u64::from(input) }
    }
}

/// Usage rows of one batch are per caller: the same tenant, request and purpose.
pub(super) fn same_caller(a: &CallContext, b: &CallContext) -> bool {
    a.tenant_id == b.tenant_id
        && a.request_id == b.request_id
        && a.conversation_id == b.conversation_id
        && a.endpoint == b.endpoint
}
