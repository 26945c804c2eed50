//! Writes the CRD YAML of every kind into `crds/yaml` and the chart's copy in
//! `charts/metricshard/files/crds` (or only into the directories given as arguments).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        dirs = vec![crate_dir.join("yaml"), crate_dir.join("../charts/metricshard/files/crds")];
    }
    for dir in &dirs {
        for (file, crd) in metricshard_crds::all_crds() {
            let path = dir.join(file);
            let written = metricshard_crds::render_crd_yaml(&crd)
                .map_err(|e| e.to_string())
                .and_then(|yaml| std::fs::write(&path, yaml).map_err(|e| e.to_string()));
            if let Err(error) = written {
                eprintln!("crdgen: cannot write {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
