//! File service discovery, as Prometheus' `file_sd_configs`: files (or a glob in the last path
//! element) holding target groups as JSON or YAML. A file that cannot be read or parsed keeps
//! the groups it last yielded; a file that disappears takes its groups with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::target_group::{self, DocumentFormat, TargetGroup};

/// The label naming the file a target was discovered in, as Prometheus names it.
pub const META_FILEPATH: &str = "__meta_filepath";

/// The state of file discovery: what every matching file last yielded, and current errors.
#[derive(Debug)]
pub struct FileDiscovery {
    patterns: Vec<PathBuf>,
    groups: BTreeMap<PathBuf, Vec<TargetGroup>>,
    errors: BTreeMap<PathBuf, String>,
}

impl FileDiscovery {
    /// Discovery over `patterns` (absolute paths; `*` and `?` allowed in the last element).
    pub fn new(patterns: &[String]) -> Self {
        Self { patterns: patterns.iter().map(PathBuf::from).collect(), groups: BTreeMap::new(), errors: BTreeMap::new() }
    }

    /// The directories to watch: the parent of every pattern (a file replaced by rename, as
    /// editors and ConfigMap volumes do, is only seen through its directory).
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.patterns.iter().filter_map(|p| p.parent().map(Path::to_path_buf)).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Re-reads every matching file. Returns whether the discovered groups changed.
    pub fn refresh(&mut self) -> bool {
        let mut errors = BTreeMap::new();
        let mut files = Vec::new();
        for pattern in &self.patterns {
            match expand(pattern) {
                Ok(found) => files.extend(found),
                Err(message) => {
                    errors.insert(pattern.clone(), message);
                }
            }
        }
        files.sort();
        files.dedup();
        let mut groups = BTreeMap::new();
        for file in files {
            match read(&file) {
                Ok(read) => {
                    groups.insert(file, read);
                }
                Err(message) => {
                    // Keep what the file last yielded (Prometheus does the same).
                    if let Some(previous) = self.groups.get(&file).cloned() {
                        groups.insert(file.clone(), previous);
                    }
                    errors.insert(file, message);
                }
            }
        }
        self.errors = errors;
        let changed = groups != self.groups;
        self.groups = groups;
        changed
    }

    /// Every discovered group with its file's path.
    pub fn groups(&self) -> impl Iterator<Item = (&Path, &TargetGroup)> {
        self.groups.iter().flat_map(|(file, groups)| groups.iter().map(move |group| (file.as_path(), group)))
    }

    /// Current problems, one per file (or pattern), naming it and the reason.
    pub fn errors(&self) -> impl Iterator<Item = String> + '_ {
        self.errors.iter().map(|(file, message)| format!("file SD {}: {message}", file.display()))
    }
}

fn read(file: &Path) -> Result<Vec<TargetGroup>, String> {
    let format = DocumentFormat::from_path(file).ok_or_else(|| "unknown extension (want .json, .yaml or .yml)".to_owned())?;
    let metadata = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if metadata.len() > target_group::DOCUMENT_SIZE_LIMIT as u64 {
        return Err(format!("larger than the limit of {} bytes", target_group::DOCUMENT_SIZE_LIMIT));
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    target_group::parse(&text, format).map_err(|e| e.to_string())
}

/// The existing files a pattern names. A pattern without wildcards names itself if it exists
/// (a missing file is no error, as with Prometheus' glob).
fn expand(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name().and_then(|n| n.to_str())) else {
        return Err("not a file path".to_owned());
    };
    if !name.contains(['*', '?']) {
        return Ok(if pattern.is_file() { vec![pattern.to_path_buf()] } else { Vec::new() });
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.to_string()),
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_str().is_some_and(|candidate| wildcard_match(name, candidate)))
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect())
}

/// Shell-style matching of one path element: `*` any run of characters, `?` one character.
/// Hidden files match only a pattern that starts with `.`, as with a shell glob.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Iterative matcher with backtracking to the last `*`: linear in practice, never recursive.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_a_shell_glob() {
        assert!(wildcard_match("*.json", "a.json"));
        assert!(!wildcard_match("*.json", ".json"));
        assert!(wildcard_match("t?.yml", "t1.yml"));
        assert!(!wildcard_match("t?.yml", "t12.yml"));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("*.json", "a.json.tmp~"));
        assert!(wildcard_match("*", "x"));
    }

    proptest::proptest! {
        #[test]
        fn wildcard_matching_never_panics(pattern in "[a-c*?.]{0,8}", name in "[a-c.]{0,12}") {
            let _ = wildcard_match(&pattern, &name);
        }
    }

    #[test]
    fn reads_globs_keeps_last_good_groups_and_forgets_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, r#"[{"targets": ["a:1"]}]"#).unwrap();
        std::fs::write(&b, "- targets: ['b:1']\n").unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "x").unwrap();
        let mut discovery =
            FileDiscovery::new(&[format!("{}/*.json", dir.path().display()), format!("{}/b.yaml", dir.path().display())]);
        assert!(discovery.refresh());
        let targets = |d: &FileDiscovery| d.groups().flat_map(|(_, g)| g.targets.clone()).collect::<Vec<_>>();
        assert_eq!(targets(&discovery), ["a:1", "b:1"]);
        assert_eq!(discovery.errors().count(), 0);
        assert!(!discovery.refresh(), "nothing changed");

        std::fs::write(&a, "[{").unwrap();
        assert!(!discovery.refresh(), "a broken file keeps its groups");
        assert_eq!(targets(&discovery), ["a:1", "b:1"]);
        let errors: Vec<String> = discovery.errors().collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("a.json") && errors[0].contains("invalid JSON"), "{errors:?}");

        std::fs::remove_file(&a).unwrap();
        assert!(discovery.refresh());
        assert_eq!(targets(&discovery), ["b:1"]);
        assert_eq!(discovery.errors().count(), 0);
        assert_eq!(discovery.watched_dirs(), [dir.path().to_path_buf()]);
    }
}
