//! Properties of the balancer (`floodwall_core::balance`) over random
//! sequences of choices, releases, failures and membership changes.

use floodwall_core::balance::{BalanceConfig, Balancer, Pick, Policy};
use floodwall_core::ManualClock;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Choose(u8),
    Release(usize),
    Fail(usize),
    Members(Vec<bool>),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12).prop_map(Op::Choose),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => proptest::collection::vec(any::<bool>(), 6).prop_map(Op::Members),
        1 => (0u16..2000).prop_map(Op::Advance),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::LeastInflight),
        Just(Policy::RoundRobin),
        Just(Policy::Hash)
    ]
}

fn names(mask: &[bool]) -> Vec<(String, usize)> {
    let mut m: Vec<_> = mask
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .map(|(i, _)| (format!("10.0.0.{i}:80"), i))
        .collect();
    if m.is_empty() {
        m.push(("10.0.0.0:80".into(), 0));
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Within `drain_timeout` of every change, no key is ever in flight on
    /// two endpoints; in-flight counts match what is held; the cap on
    /// ejections holds; and once everything is released nothing is left.
    #[test]
    fn no_key_on_two_endpoints_and_counts_return_to_zero(
        policy in policy(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let clock = Arc::new(ManualClock::new());
        let config = BalanceConfig {
            policy,
            drain_timeout: Duration::from_secs(3600),
            ..BalanceConfig::default()
        };
        let b = Balancer::new(config, names(&[true; 4]), clock.clone(), 1);
        let mut held: Vec<(u8, Pick<usize>)> = Vec::new();
        for op in ops {
            match op {
                Op::Choose(k) => {
                    let p = b.choose(Some(&[k])).expect("members are never empty here");
                    held.push((k, p));
                }
                Op::Release(i) if !held.is_empty() => {
                    let i = i % held.len();
                    held.swap_remove(i);
                }
                Op::Fail(i) if !held.is_empty() => {
                    let i = i % held.len();
                    held[i].1.failure();
                }
                Op::Members(mask) => {
                    b.set_members(names(&mask));
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(u64::from(ms))),
                _ => {}
            }
            if policy == Policy::Hash {
                let mut on: HashMap<u8, HashSet<String>> = HashMap::new();
                for (k, p) in &held {
                    on.entry(*k).or_default().insert(p.endpoint().name.clone());
                }
                for (k, set) in on {
                    prop_assert!(set.len() == 1, "key {k} in flight on {set:?}");
                }
            }
            let s = b.snapshot();
            for e in &s.endpoints {
                let mine = held.iter().filter(|(_, p)| p.endpoint().name == e.name).count();
                if !e.leaving {
                    prop_assert_eq!(e.inflight, mine, "{}", e.name);
                }
            }
            let members: Vec<_> = s.endpoints.iter().filter(|e| !e.leaving).collect();
            let out = members.iter().filter(|e| e.ejected_for.is_some()).count();
            prop_assert!(out <= members.len() / 2, "{out} of {} ejected", members.len());
        }
        drop(held);
        let s = b.snapshot();
        prop_assert_eq!(s.keys_in_flight, 0);
        prop_assert!(s.endpoints.iter().all(|e| e.inflight == 0));
    }

    /// Least in-flight never picks an ejected endpoint while one is in,
    /// and a held endpoint is never chosen over an idle one of two.
    #[test]
    fn choices_skip_ejected_endpoints(fails in proptest::collection::vec(0usize..4, 0..40)) {
        let clock = Arc::new(ManualClock::new());
        let b = Balancer::new(BalanceConfig::default(), names(&[true; 4]), clock, 3);
        let picks: Vec<_> = (0..4).map(|_| b.choose(None).unwrap()).collect();
        for f in fails {
            picks[f % picks.len()].failure();
        }
        drop(picks);
        let s = b.snapshot();
        let ejected: HashSet<_> = s.endpoints.iter().filter(|e| e.ejected_for.is_some()).map(|e| e.name.clone()).collect();
        for _ in 0..50 {
            let p = b.choose(None).unwrap();
            prop_assert!(!ejected.contains(&p.endpoint().name));
        }
    }
}
