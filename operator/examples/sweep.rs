//! Temporary: movement sweep.
#![allow(missing_docs)]
use metricshard_operator::assignment::{assign, AssignmentConfig, CollectorId, InputKey};
fn main() {
    let cols = |k: usize| (0..k).map(|i| CollectorId::new(format!("metricshard-collector-{i}"))).collect::<Vec<_>>();
    for &m in &[500usize, 1000, 2000, 10000] { for &eps in &[0.05, 0.1, 0.3] { for &vn in &[128u32, 256] {
        let mut worst_excess = i64::MIN; let mut worst_ratio: f64 = 0.0; let mut worst_sigma: f64 = f64::MIN;
        for n in 1..10 { for t in 0..20 {
            let cfg = AssignmentConfig { load_factor_epsilon: eps, virtual_nodes: vn };
            let inputs: Vec<InputKey> = (0..m).map(|i| InputKey::new(&format!("ns{t}"), &format!("in-{i}"))).collect();
            let a = assign(&inputs, &cols(n), None, &cfg).unwrap();
            let b = assign(&inputs, &cols(n+1), Some(a.owners()), &cfg).unwrap();
            let moved = b.moved_from(a.owners()) as f64;
            let share = m as f64 / (n+1) as f64;
            worst_excess = worst_excess.max(moved as i64 - b.capacity() as i64);
            worst_ratio = worst_ratio.max(moved / share);
            worst_sigma = worst_sigma.max((moved - share) / share.sqrt());
        }}
        println!("m={m:5} eps={eps} vn={vn}: worst moved-cap' {worst_excess:4}  worst moved/share {worst_ratio:.3}  worst (moved-share)/sqrt(share) {worst_sigma:.2}");
    }}}
}
