//! Follow-up samples (督导抽查, DOMAIN.md "The work", item 4): which visited households a
//! supervisor phones. The draw is simple random sampling without replacement, so every
//! candidate is equally likely and none is drawn twice in a round; it is reproducible:
//! the same candidates and the same seed give the same households in the same order.
//!
//! The candidates are sorted before drawing, so the order a caller lists them in does
//! not matter. The generator is ChaCha8 seeded from a 64-bit seed (rand_chacha, whose
//! stream is fixed by the algorithm); the draw is rand 0.9's `seq::index::sample`.
//! The server records each round's seed, candidates and result, so a round can be
//! checked later even if a future build drew differently.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How big a sample: a share of the candidates or a number of households.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleSize {
    /// This many percent of the candidates (1-100), rounded up, at least one when
    /// there is any candidate.
    Percent(u32),
    /// This many households, or every candidate when there are fewer.
    Count(u32),
}

impl SampleSize {
    /// The number of households drawn from `candidates` households.
    pub fn of(self, candidates: usize) -> usize {
        match self {
            SampleSize::Percent(p) => {
                let p = p.min(100) as usize;
                (candidates * p)
                    .div_ceil(100)
                    .max(usize::from(candidates > 0 && p > 0))
            }
            SampleSize::Count(n) => (n as usize).min(candidates),
        }
    }
}

/// A fresh seed from the operating system's generator.
///
/// Errors: the OS generator's error, when it has none to give.
pub fn new_seed() -> Result<u64, getrandom::Error> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Draws `size` of `candidates` (each at most once) with the generator seeded by
/// `seed`, in the order drawn. Duplicated candidates count once.
pub fn draw<T: Clone + Ord>(candidates: &[T], size: SampleSize, seed: u64) -> Vec<T> {
    let mut sorted = candidates.to_vec();
    sorted.sort();
    sorted.dedup();
    let amount = size.of(sorted.len());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rand::seq::index::sample(&mut rng, sorted.len(), amount)
        .into_iter()
        .map(|i| sorted[i].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_and_stop_at_the_candidates() {
        assert_eq!(SampleSize::Percent(10).of(0), 0);
        assert_eq!(SampleSize::Percent(10).of(1), 1);
        assert_eq!(SampleSize::Percent(10).of(95), 10);
        assert_eq!(SampleSize::Percent(10).of(100), 10);
        assert_eq!(SampleSize::Percent(100).of(7), 7);
        assert_eq!(SampleSize::Percent(250).of(7), 7);
        assert_eq!(SampleSize::Count(5).of(3), 3);
        assert_eq!(SampleSize::Count(5).of(30), 5);
    }

    #[test]
    fn a_seed_draws_the_same_households_whatever_the_order_given() {
        let c: Vec<u32> = (0..200).collect();
        let mut rev = c.clone();
        rev.reverse();
        let a = draw(&c, SampleSize::Count(20), 42);
        assert_eq!(a, draw(&rev, SampleSize::Count(20), 42));
        assert_ne!(a, draw(&c, SampleSize::Count(20), 43));
        let mut unique = a.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 20, "no household twice in a round");
    }

    /// Fairness: over 4,000 seeded draws of 5 from 20, each household is drawn about
    /// 1,000 times; a chi-square statistic over the 20 counts stays below the 0.1 %
    /// critical value of 19 degrees of freedom (43.82). Seeds are fixed, so the test is
    /// deterministic; a biased draw (say, always the first five) fails it by far.
    #[test]
    fn every_candidate_is_equally_likely() {
        let c: Vec<u32> = (0..20).collect();
        let mut counts = [0u32; 20];
        for seed in 0..4000 {
            for h in draw(&c, SampleSize::Count(5), seed) {
                counts[h as usize] += 1;
            }
        }
        let expected = 4000.0 * 5.0 / 20.0;
        let chi2: f64 = counts
            .iter()
            .map(|&n| (n as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 43.82, "chi-square {chi2:.1}, counts {counts:?}");
    }
}
