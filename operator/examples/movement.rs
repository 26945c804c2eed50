//! Temporary: movement figures.
#![allow(missing_docs)]
use metricshard_operator::assignment::{assign, AssignmentConfig, CollectorId, InputKey};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let m: usize = args[1].parse().unwrap();
    let n: usize = args[2].parse().unwrap();
    let vn: u32 = args[3].parse().unwrap();
    let trials: usize = args[4].parse().unwrap();
    let cfg = AssignmentConfig { virtual_nodes: vn, ..AssignmentConfig::default() };
    let cols = |k: usize| (0..k).map(|i| CollectorId::new(format!("metricshard-collector-{i}"))).collect::<Vec<_>>();
    let (mut fa, mut sa, mut fr, mut sr, mut fc, mut sc) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut maxl = vec![];
    for t in 0..trials {
        let inputs: Vec<InputKey> = (0..m).map(|i| InputKey::new(&format!("ns-{t}-{}", i % 37), &format!("input-{i}"))).collect();
        let a = assign(&inputs, &cols(n), None, &cfg).unwrap();
        maxl.push(a.max_load() as f64 / (m as f64 / n as f64));
        let f = assign(&inputs, &cols(n + 1), None, &cfg).unwrap();
        let s = assign(&inputs, &cols(n + 1), Some(a.owners()), &cfg).unwrap();
        fa.push(f.moved_from(a.owners())); sa.push(s.moved_from(a.owners()));
        // removal n+1 -> n starting from fresh n+1
        let f1 = assign(&inputs, &cols(n + 1), None, &cfg).unwrap();
        let gone = CollectorId::new(format!("metricshard-collector-{}", n / 2));
        let rest: Vec<_> = cols(n + 1).into_iter().filter(|c| *c != gone).collect();
        let on_gone = f1.load(gone.as_str());
        let fr1 = assign(&inputs, &rest, None, &cfg).unwrap();
        let sr1 = assign(&inputs, &rest, Some(f1.owners()), &cfg).unwrap();
        fr.push(fr1.moved_from(f1.owners()) - on_gone); sr.push(sr1.moved_from(f1.owners()) - on_gone);
        // churn: add 1% inputs
        let mut more = inputs.clone();
        more.extend((0..m / 100).map(|i| InputKey::new("extra", &format!("x-{t}-{i}"))));
        let fc1 = assign(&more, &cols(n), None, &cfg).unwrap();
        let sc1 = assign(&more, &cols(n), Some(a.owners()), &cfg).unwrap();
        fc.push(fc1.moved_from(a.owners())); sc.push(sc1.moved_from(a.owners()));
        let again = assign(&inputs, &cols(n+1), Some(s.owners()), &cfg).unwrap();
        assert_eq!(again, s);
    }
    let st = |v: &Vec<usize>| { let mut v = v.clone(); v.sort(); format!("min {} med {} max {}", v[0], v[v.len()/2], v[v.len()-1]) };
    println!("m={m} n={n}->{} vn={vn} ideal add={:.0} cap(n+1)={}", n+1, m as f64/(n+1) as f64, ((1.1*m as f64)/(n+1) as f64).ceil());
    println!("  add   fresh: {}   sticky: {}", st(&fa), st(&sa));
    println!("  remove extra (beyond removed's inputs) fresh: {}   sticky: {}", st(&fr), st(&sr));
    println!("  +1% inputs moved fresh: {}   sticky: {}", st(&fc), st(&sc));
    let mut ml = maxl.clone(); ml.sort_by(|a,b| a.partial_cmp(b).unwrap());
    println!("  maxload/mean at n: max {:.3}", ml[ml.len()-1]);
}
