//! Tree attention masks: a candidate tree (Medusa / EAGLE / multi-token-prediction verification)
//! given by a parent array, turned into the packed ancestor bits the kernel reads.
//!
//! Node `t` sees node `u` when `u` is `t` or an ancestor of `t`. Because every parent precedes its
//! child (`parents[t] < t`), one pass in index order builds each row from its parent's row, and the
//! result is lower-triangular: the tree mask only ever removes keys the causal mask would show.

use crate::common::error::{Result, RuntimeError};

/// A validated candidate tree and its ancestor-or-self bits, `[n, words]` u64 with
/// `words = ceil(n / 64)`: bit `u % 64` of word `u / 64` in row `t` is set when `t` sees `u`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeMask {
    n: usize,
    words: usize,
    bits: Vec<u64>,
}

impl TreeMask {
    /// Checks that `parents` forms a forest in topological order (`-1 <= parents[t] < t`) and builds
    /// the bits. `what` names the argument in errors (`tree`, `tree[2]`).
    pub fn from_parents(what: &str, parents: &[i64]) -> Result<TreeMask> {
        let n = parents.len();
        if n == 0 {
            return Err(RuntimeError::invalid(what, "the tree has no nodes"));
        }
        let words = n.div_ceil(64);
        let mut bits = vec![0u64; n * words];
        for (t, &parent) in parents.iter().enumerate() {
            if parent < -1 || parent >= t as i64 {
                return Err(RuntimeError::invalid(
                    format!("{what}.parents[{t}]"),
                    format!("{parent}: a parent must be -1 (a root) or an earlier node (0..{t}), so the nodes form a tree"),
                ));
            }
            if parent >= 0 {
                let (row, from) = (t * words, parent as usize * words);
                for w in 0..words {
                    bits[row + w] = bits[from + w];
                }
            }
            bits[t * words + t / 64] |= 1u64 << (t % 64);
        }
        Ok(TreeMask { n, words, bits })
    }

    pub fn nodes(&self) -> usize {
        self.n
    }

    pub fn words(&self) -> usize {
        self.words
    }

    /// `[n, words]`, row-major.
    pub fn bits(&self) -> &[u64] {
        &self.bits
    }

    /// Whether node `t` sees node `u` (`u` is `t` or one of its ancestors).
    pub fn sees(&self, t: usize, u: usize) -> bool {
        (self.bits[t * self.words + u / 64] >> (u % 64)) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tree_bits() {
        //      0
        //     / \
        //    1   2
        //    |
        //    3
        let t = TreeMask::from_parents("tree", &[-1, 0, 0, 1]).unwrap();
        assert_eq!(t.bits(), &[0b0001, 0b0011, 0b0101, 0b1011]);
        assert!(t.sees(3, 1) && t.sees(3, 0) && t.sees(3, 3) && !t.sees(3, 2));
    }

    #[test]
    fn wide_trees_use_several_words() {
        // A chain of 130 nodes: node t sees 0..=t, across three words.
        let parents: Vec<i64> = (0..130).map(|t| t - 1).collect();
        let t = TreeMask::from_parents("tree", &parents).unwrap();
        assert_eq!(t.words(), 3);
        for a in 0..130 {
            for b in 0..130 {
                assert_eq!(t.sees(a, b), b <= a, "{a} {b}");
            }
        }
        // A forest of roots: every node sees only itself.
        let t = TreeMask::from_parents("tree", &[-1; 70]).unwrap();
        assert!((0..70).all(|a| (0..70).all(|b| t.sees(a, b) == (a == b))));
    }

    #[test]
    fn parents_that_do_not_form_a_tree_are_named() {
        for (parents, at) in [(vec![-1, 1], "tree.parents[1]"), (vec![-1, 0, 5], "tree.parents[2]"), (vec![-2], "tree.parents[0]")] {
            match TreeMask::from_parents("tree", &parents) {
                Err(RuntimeError::InvalidArgument { arg, message }) => {
                    assert_eq!(arg, at);
                    assert!(message.contains("earlier node"), "{message}");
                }
                other => panic!("{parents:?}: {other:?}"),
            }
        }
        assert!(TreeMask::from_parents("tree", &[]).is_err());
    }
}
