//! What a model call costs, from a price table in USD per million tokens.
//!
//! Defaults cover common OpenAI models; `MODEL_PRICES` (JSON) adds or overrides
//! entries. Unknown models cost 0 and are logged once per call as such, so a
//! missing price is visible rather than silently wrong.

use std::collections::HashMap;

use serde::Deserialize;

/// USD per one million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ModelPrice {
    pub input: f64,
    #[serde(default)]
    pub output: f64,
}

#[derive(Debug, Clone)]
pub struct PriceTable(HashMap<String, ModelPrice>);

impl Default for PriceTable {
    fn default() -> Self {
        let entries = [
            ("gpt-4o-mini", 0.15, 0.60),
            ("gpt-4o", 2.50, 10.00),
            ("gpt-4.1", 2.00, 8.00),
            ("gpt-4.1-mini", 0.40, 1.60),
            ("gpt-4.1-nano", 0.10, 0.40),
            ("o4-mini", 1.10, 4.40),
            ("text-embedding-3-small", 0.02, 0.0),
            ("text-embedding-3-large", 0.13, 0.0),
            ("text-embedding-ada-002", 0.10, 0.0),
            // The local provider is free, but listed so it is never reported as "unpriced".
            ("local-extractive", 0.0, 0.0),
            ("local-hash-384", 0.0, 0.0),
        ];
        Self(
            entries
                .into_iter()
                .map(|(model, input, output)| (model.to_string(), ModelPrice { input, output }))
                .collect(),
        )
    }
}

impl PriceTable {
    pub fn extend(&mut self, overrides: HashMap<String, ModelPrice>) {
        self.0.extend(overrides);
    }

    pub fn get(&self, model: &str) -> Option<ModelPrice> {
        self.0.get(model).copied()
    }

    /// Cost in USD; 0 for a model without a price.
    pub fn cost_usd(&self, model: &str, input_tokens: u32, output_tokens: u32) -> f64 {
        self.get(model).map_or(0.0, |p| (input_tokens as f64 * p.input + output_tokens as f64 * p.output) / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_priced_per_million_tokens_for_input_and_output_separately() {
        let table = PriceTable::default();
        let cost = table.cost_usd("gpt-4o-mini", 2_000_000, 1_000_000);
        assert!((cost - (0.30 + 0.60)).abs() < 1e-12, "{cost}");
    }

    #[test]
    fn unknown_models_cost_nothing() {
        assert_eq!(PriceTable::default().cost_usd("mystery", 10, 10), 0.0);
    }
}
