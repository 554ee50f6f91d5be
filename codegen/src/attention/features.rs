//! The attention variants a kernel is specialised for: masks, score modifiers and memory layouts
//! decided at compile time, so a plain kernel pays nothing for them and a variant's kernel never
//! loads a tile its mask hides. The values they need (window bounds, slopes, page size, ...) are
//! launch arguments.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::params::AttentionFeature;
use crate::common::SpecError;

/// Which variants an [`crate::AttentionSpec`] instantiates. `Default` is plain attention.
///
/// Every combination is allowed except `tree` without `causal` (checked by
/// [`crate::AttentionSpec::validate`]): the tree mask refines the causal mask of the candidate
/// block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct AttentionFeatures {
    /// Sliding window `(left, right)` around each query's diagonal (FlashAttention's
    /// `window_size`); key tiles outside every row's window are never loaded.
    pub local: bool,
    /// ALiBi: `score -= slope[head] * |qpos - kpos|`.
    pub alibi: bool,
    /// Logit soft-capping: `score = cap * tanh(score / cap)` (before ALiBi).
    pub softcap: bool,
    /// Learned prefix keys/values shared by the batch, visible to every query, read from their own
    /// buffers (no concatenation copy).
    pub prefix: bool,
    /// Tree attention (Medusa/EAGLE verification): the last `n_tree` queries and keys are candidate
    /// tokens that see the context and their own ancestors only.
    pub tree: bool,
    /// Packed batches without padding, delimited by `cu_seqlens`.
    pub varlen: bool,
    /// K/V in a paged cache addressed through a block table.
    pub paged: bool,
    /// One CTA handles all query heads of one KV head (decode-friendly GQA packing).
    pub pack_gqa: bool,
    /// Keys split across CTAs, partial results merged through their log-sum-exp.
    pub split_kv: bool,
}

/// The FEATURES bit of each flag: the `ATTN_*` code the templates test, generated from
/// [`AttentionFeature`].
const BITS: [(&str, AttentionFeature); 9] = [
    ("local", AttentionFeature::Local),
    ("alibi", AttentionFeature::Alibi),
    ("softcap", AttentionFeature::Softcap),
    ("prefix", AttentionFeature::Prefix),
    ("tree", AttentionFeature::Tree),
    ("varlen", AttentionFeature::Varlen),
    ("paged", AttentionFeature::Paged),
    ("pack_gqa", AttentionFeature::PackGqa),
    ("split_kv", AttentionFeature::Split),
];

impl AttentionFeatures {
    /// No variant: plain (optionally causal) attention. `const`, for spec constants.
    pub const PLAIN: AttentionFeatures = AttentionFeatures {
        local: false,
        alibi: false,
        softcap: false,
        prefix: false,
        tree: false,
        varlen: false,
        paged: false,
        pack_gqa: false,
        split_kv: false,
    };

    /// Every flag name, in template-bit order (what `tessera list` shows and [`Self::parse`] reads).
    pub const NAMES: [&'static str; 9] =
        ["local", "alibi", "softcap", "prefix", "tree", "varlen", "paged", "pack_gqa", "split_kv"];

    fn flags(&self) -> [bool; 9] {
        [
            self.local,
            self.alibi,
            self.softcap,
            self.prefix,
            self.tree,
            self.varlen,
            self.paged,
            self.pack_gqa,
            self.split_kv,
        ]
    }

    fn flag_mut(&mut self, index: usize) -> &mut bool {
        match index {
            0 => &mut self.local,
            1 => &mut self.alibi,
            2 => &mut self.softcap,
            3 => &mut self.prefix,
            4 => &mut self.tree,
            5 => &mut self.varlen,
            6 => &mut self.paged,
            7 => &mut self.pack_gqa,
            _ => &mut self.split_kv,
        }
    }

    /// The template's FEATURES argument: the sum of the flags' [`AttentionFeature`] bits.
    pub fn bits(&self) -> u32 {
        self.flags().iter().zip(BITS).filter(|(on, _)| **on).map(|(_, (_, feature))| feature.bit()).sum()
    }

    /// Whether no variant is on (plain attention).
    pub fn is_plain(&self) -> bool {
        !self.flags().contains(&true)
    }

    /// The names of the flags that are on.
    pub fn enabled(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.flags().into_iter().zip(Self::NAMES).filter(|(on, _)| *on).map(|(_, name)| name)
    }

    /// Comma-separated flag names (`local,alibi`); the empty string is plain attention.
    pub fn parse(text: &str) -> Result<AttentionFeatures, SpecError> {
        let mut features = AttentionFeatures::default();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let index = Self::NAMES
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| SpecError::unsupported("features", name, Self::NAMES.join(", ")))?;
            *features.flag_mut(index) = true;
        }
        Ok(features)
    }
}

/// `local+alibi`, or `plain`.
impl fmt::Display for AttentionFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_plain() {
            return f.write_str("plain");
        }
        f.write_str(&self.enabled().collect::<Vec<_>>().join("+"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_generated_enum() {
        // What the templates see: the declaration in the generated contract.
        let mut contract = crate::common::params::Declarations::new();
        super::super::params::contract(&mut contract);
        let declaration = contract.iter().find(|d| d.contains("ATTN_")).expect("the contract declares the ATTN bits");
        let expected = [1, 2, 4, 8, 16, 32, 64, 128, 256];
        for ((name, feature), bit) in BITS.into_iter().zip(expected) {
            assert_eq!(feature.bit(), bit, "{name}");
            let item = format!("ATTN_{} = {bit}", name.to_uppercase().replace("SPLIT_KV", "SPLIT"));
            assert!(
                declaration.contains(&format!("{item},")) || declaration.contains(&format!("{item} }}")),
                "the generated declaration lacks `{item}`: {declaration}"
            );
        }
        assert_eq!(AttentionFeatures::NAMES.to_vec(), BITS.map(|(n, _)| n).to_vec());
        let template = crate::common::Template::AttentionForward.text();
        assert!(!template.contains("ATTN_LOCAL ="), "templates/attention/sm80.cuh declares the ATTN bits by hand");
    }

    #[test]
    fn parse_round_trips_and_names_unknown_flags() {
        let f = AttentionFeatures::parse("local, alibi,split_kv").unwrap();
        assert!(f.local && f.alibi && f.split_kv && !f.paged);
        assert_eq!(f.bits(), 1 + 2 + 256);
        assert_eq!(f.to_string(), "local+alibi+split_kv");
        assert_eq!(AttentionFeatures::parse("").unwrap(), AttentionFeatures::default());
        assert_eq!(AttentionFeatures::default().to_string(), "plain");
        let err = AttentionFeatures::parse("local,sliding").unwrap_err().to_string();
        assert!(err.contains("features") && err.contains("sliding") && err.contains("pack_gqa"), "{err}");
        for (i, name) in AttentionFeatures::NAMES.iter().enumerate() {
            let one = AttentionFeatures::parse(name).unwrap();
            assert_eq!(one.bits(), 1 << i);
        }
    }

    #[test]
    fn old_json_without_features_reads_as_plain() {
        let f: AttentionFeatures = serde_json::from_str("{}").unwrap();
        assert!(f.is_plain());
        let f: AttentionFeatures = serde_json::from_str(r#"{"paged":true}"#).unwrap();
        assert!(f.paged && !f.local);
    }
}
