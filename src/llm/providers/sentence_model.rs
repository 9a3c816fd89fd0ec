//! The local provider's semantic embeddings: a sentence-transformers BERT
//! model (all-MiniLM-L6-v2 by default: 384 dimensions, Apache-2.0 weights) run
//! in process on the CPU with candle, so retrieval understands paraphrases with
//! no network and no API key.
//!
//! The model directory holds what sentence-transformers ships: `config.json`,
//! `model.safetensors` and `tokenizer.json`. Vectors are the mean of the
//! last layer over the real (unpadded) tokens, L2-normalised, as the model was
//! trained. Inputs are cut at [`MAX_TOKENS`] word pieces, the length the model
//! was trained on. Calls are CPU-bound: the provider runs them on the blocking
//! pool, never on the async runtime.

use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// all-MiniLM-L6-v2's `max_seq_length`: longer inputs are truncated.
pub const MAX_TOKENS: usize = 256;

/// Texts run through the model together; sorted by length first, so a batch
/// pads little.
const BATCH: usize = 16;

pub struct SentenceModel {
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
}

impl SentenceModel {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?,
        )
        .with_context(|| format!("parsing {}", config_path.display()))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", dir.join("tokenizer.json").display()))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        let weights = dir.join("model.safetensors");
        // SAFETY: the weights file is mapped read-only and not modified while stolid runs
        // (it lives in a directory stolid only reads).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
            .with_context(|| format!("mapping {}", weights.display()))?;
        let model = BertModel::load(vb, &config).with_context(|| format!("loading {}", weights.display()))?;
        Ok(Self { model, tokenizer, dimensions: config.hidden_size })
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// One unit vector per text, in input order.
    pub fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
            for (&i, vector) in batch.iter().zip(self.embed_batch(inputs)?) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    fn embed_batch(&self, texts: Vec<&str>) -> anyhow::Result<Vec<Vec<f32>>> {
        let encodings = self.tokenizer.encode_batch(texts, true).map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let rows = |f: fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
            let rows = encodings.iter().map(|e| Tensor::new(f(e), &Device::Cpu)).collect::<Result<Vec<_>, _>>()?;
            Tensor::stack(&rows, 0)
        };
        let ids = rows(|e| e.get_ids())?;
        let mask = rows(|e| e.get_attention_mask())?;
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        // Mean over the real tokens: padding must not pull short texts towards each other.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let mean = hidden.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&mask.sum(1)?)?;
        let unit = mean.broadcast_div(&mean.sqr()?.sum_keepdim(1)?.sqrt()?)?;
        Ok(unit.to_vec2()?)
    }
}
