//! Which version a call goes to: the one the caller pinned (`x-shippy-route-<service>`, see
//! `discovery::context`), else one drawn by the live routing weights (`client.routing.<service>`),
//! else any. Weights are shares among the versions that have instances right now, so a weight on
//! a version that is not running moves nothing, and when none of the weighted versions runs the
//! call goes to whatever does (an outage of the canary is not an outage of the service).

use std::collections::BTreeMap;

use crate::config::VersionWeights;

/// The version a call must go to, drawn with `roll` (uniform over `u32`); `None` = any.
pub(super) fn choose_version<'a>(
    weights: &VersionWeights,
    present: impl IntoIterator<Item = &'a str>,
    roll: u32,
) -> Option<String> {
    if weights.is_empty() {
        return None;
    }
    let shares: BTreeMap<&str, u64> = present
        .into_iter()
        .map(|version| (version, u64::from(weights.of(version))))
        .filter(|(_, weight)| *weight > 0)
        .collect();
    let total: u64 = shares.values().sum();
    if total == 0 {
        return None;
    }
    let mut point = u64::from(roll) % total;
    for (version, weight) in shares {
        if point < weight {
            return Some(version.to_owned());
        }
        point -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(text: &str) -> VersionWeights {
        text.parse().expect("weights")
    }

    #[test]
    fn weights_split_calls_among_running_versions() {
        let w = weights("0.1.0=90,0.2.0=10");
        let present = ["0.1.0", "0.2.0", "0.1.0"];
        let mut counts = BTreeMap::new();
        for roll in 0..1_000 {
            let version = choose_version(&w, present, roll).expect("a version");
            *counts.entry(version).or_insert(0) += 1;
        }
        assert_eq!(counts["0.1.0"], 900);
        assert_eq!(counts["0.2.0"], 100);
    }

    #[test]
    fn absent_or_unweighted_versions_fall_back_sensibly() {
        assert_eq!(choose_version(&VersionWeights::default(), ["1"], 7), None);
        let w = weights("0.1.0=0,0.2.0=100");
        assert_eq!(
            choose_version(&w, ["0.1.0", "0.2.0"], 5).as_deref(),
            Some("0.2.0")
        );
        // The weighted version is not running: any instance will do.
        assert_eq!(choose_version(&w, ["0.1.0"], 5), None);
        // A version the weights do not list gets nothing while a listed one runs.
        assert_eq!(
            choose_version(&w, ["0.3.0", "0.2.0"], 1).as_deref(),
            Some("0.2.0")
        );
    }

    #[test]
    fn weight_text_is_checked() {
        assert!("0.1.0=ninety".parse::<VersionWeights>().is_err());
        assert!("0.1.0".parse::<VersionWeights>().is_err());
        assert_eq!(weights(" 0.1.0 = 5 , ").of("0.1.0"), 5);
    }
}
