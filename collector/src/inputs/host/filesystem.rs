//! `filesystem`: size and inode figures of mounted filesystems, as node_exporter's filesystem
//! collector: `node_filesystem_{size,free,avail}_bytes`, `node_filesystem_files{,_free}`,
//! `node_filesystem_readonly` and `node_filesystem_device_error`, labelled
//! `{device,fstype,mountpoint}`. Mounts come from the host's mount table (pure parser below);
//! figures from `statvfs` of the mount point below the configured root filesystem.

use std::path::Path;

use metricshard_crds::FilesystemFilter;
use regex::Regex;

use super::{HostError, Metric, MetricKind, ParseError, below_root};

/// One line of a mount table (`/proc/<pid>/mounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mounted device or source (`/dev/vda1`, `tmpfs`).
    pub device: String,
    /// Where it is mounted, as the host sees it.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mounted read-only (option `ro`).
    pub read_only: bool,
}

/// Compiled mount point and filesystem type exclusions.
#[derive(Debug, Clone)]
pub struct MountFilter {
    mount_points_exclude: Regex,
    fs_types_exclude: Regex,
}

impl MountFilter {
    /// Compiles the filter.
    pub fn compile(filter: &FilesystemFilter) -> Result<Self, HostError> {
        let compile = |pattern: &str, field| Regex::new(pattern).map_err(|source| HostError::Regex { field, source });
        Ok(Self {
            mount_points_exclude: compile(&filter.mount_points_exclude, "filesystem.mountPointsExclude")?,
            fs_types_exclude: compile(&filter.fs_types_exclude, "filesystem.fsTypesExclude")?,
        })
    }

    /// Whether `mount` is reported.
    pub fn admits(&self, mount: &Mount) -> bool {
        !self.mount_points_exclude.is_match(&mount.mount_point) && !self.fs_types_exclude.is_match(&mount.fs_type)
    }
}

/// Decodes the octal escapes (`\040` for a space) the kernel writes into mount tables.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a mount table. A mount point mounted more than once is reported once, with its last
/// (visible) mount's device, type and options, in the order mount points first appear.
pub fn parse_mounts(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts: Vec<Mount> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 4 {
            return Err(ParseError::at(index, format!("{} fields, expected at least 4", fields.len())));
        }
        let mount = Mount {
            device: unescape(fields[0]),
            mount_point: unescape(fields[1]),
            fs_type: unescape(fields[2]),
            read_only: fields[3].split(',').any(|option| option == "ro"),
        };
        match mounts.iter_mut().find(|m| m.mount_point == mount.mount_point) {
            Some(existing) => *existing = mount,
            None => mounts.push(mount),
        }
    }
    Ok(mounts)
}

/// Figures of one filesystem, from `statvfs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Bytes in total.
    pub size_bytes: f64,
    /// Bytes free.
    pub free_bytes: f64,
    /// Bytes free to unprivileged users.
    pub avail_bytes: f64,
    /// Inodes in total.
    pub files: f64,
    /// Inodes free.
    pub files_free: f64,
}

/// The metrics of one mount: its usage, or only `device_error 1` when `statvfs` failed.
pub fn mount_metrics(mount: &Mount, usage: Option<Usage>) -> Vec<Metric> {
    let labels = [("device", mount.device.as_str()), ("fstype", mount.fs_type.as_str()), ("mountpoint", mount.mount_point.as_str())];
    let gauge = |name: &str, value: f64| Metric::new(name, MetricKind::Gauge, &labels, value);
    let Some(usage) = usage else {
        return vec![gauge("node_filesystem_device_error", 1.0)];
    };
    vec![
        gauge("node_filesystem_size_bytes", usage.size_bytes),
        gauge("node_filesystem_free_bytes", usage.free_bytes),
        gauge("node_filesystem_avail_bytes", usage.avail_bytes),
        gauge("node_filesystem_files", usage.files),
        gauge("node_filesystem_files_free", usage.files_free),
        gauge("node_filesystem_readonly", if mount.read_only { 1.0 } else { 0.0 }),
        gauge("node_filesystem_device_error", 0.0),
    ]
}

/// `statvfs` of `path`. Block counts are multiplied by `f_bsize`, as node_exporter multiplies
/// `statfs`' `Bsize` (on Linux the fundamental block size equals it for local filesystems).
pub fn usage(path: &Path) -> std::io::Result<Usage> {
    let stat = rustix::fs::statvfs(path)?;
    let block = stat.f_bsize as f64;
    Ok(Usage {
        size_bytes: stat.f_blocks as f64 * block,
        free_bytes: stat.f_bfree as f64 * block,
        avail_bytes: stat.f_bavail as f64 * block,
        files: stat.f_files as f64,
        files_free: stat.f_ffree as f64,
    })
}

/// The metrics of every admitted mount, each `statvfs`ed below `rootfs`.
pub fn stat_mounts(mounts: &[Mount], filter: &MountFilter, rootfs: &Path) -> Vec<Metric> {
    mounts
        .iter()
        .filter(|mount| filter.admits(mount))
        .flat_map(|mount| {
            let path = below_root(rootfs, &mount.mount_point);
            let usage = match usage(&path) {
                Ok(usage) => Some(usage),
                Err(error) => {
                    tracing::debug!(mount_point = %mount.mount_point, path = %path.display(), "statvfs failed: {error}");
                    None
                }
            };
            mount_metrics(mount, usage)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpt captured from a Debian 12 container's /proc/1/mounts, plus an escaped mount point.
    const MOUNTS: &str = "proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime,size=24683656k 0 0
/dev/vda / ext4 rw,relatime,discard 0 0
/dev/vdb1 /srv/my\\040data xfs ro,noatime 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0
tmpfs /run tmpfs ro,nosuid 0 0
";

    fn default_filter() -> MountFilter {
        MountFilter::compile(&FilesystemFilter::default()).unwrap()
    }

    #[test]
    fn mount_table_with_escapes_and_overmounts() {
        let mounts = parse_mounts(MOUNTS).unwrap();
        assert_eq!(mounts.len(), 8, "the second /run replaces the first");
        let data = mounts.iter().find(|m| m.device == "/dev/vdb1").unwrap();
        assert_eq!(data.mount_point, "/srv/my data");
        assert!(data.read_only);
        let run = mounts.iter().find(|m| m.mount_point == "/run").unwrap();
        assert!(run.read_only, "the visible (last) mount wins");
        assert_eq!(parse_mounts("a b\n").unwrap_err().message, "2 fields, expected at least 4");
    }

    #[test]
    fn node_exporter_default_exclusions() {
        let filter = default_filter();
        let admitted: Vec<String> =
            parse_mounts(MOUNTS).unwrap().into_iter().filter(|m| filter.admits(m)).map(|m| m.mount_point).collect();
        assert_eq!(admitted, ["/", "/srv/my data", "/run"]);
    }

    #[test]
    fn metrics_of_a_mount_and_of_a_failed_statvfs() {
        let mount = Mount { device: "/dev/vda".into(), mount_point: "/".into(), fs_type: "ext4".into(), read_only: false };
        let usage = Usage { size_bytes: 100.0, free_bytes: 50.0, avail_bytes: 40.0, files: 10.0, files_free: 5.0 };
        let metrics = mount_metrics(&mount, Some(usage));
        let got: Vec<(&str, f64)> = metrics.iter().map(|m| (m.name.as_str(), m.value)).collect();
        assert_eq!(
            got,
            [
                ("node_filesystem_size_bytes", 100.0),
                ("node_filesystem_free_bytes", 50.0),
                ("node_filesystem_avail_bytes", 40.0),
                ("node_filesystem_files", 10.0),
                ("node_filesystem_files_free", 5.0),
                ("node_filesystem_readonly", 0.0),
                ("node_filesystem_device_error", 0.0),
            ]
        );
        assert_eq!(metrics[0].labels.get("mountpoint"), Some("/"));
        assert_eq!(metrics[0].labels.get("fstype"), Some("ext4"));
        assert_eq!(metrics[0].labels.get("device"), Some("/dev/vda"));
        let failed = mount_metrics(&mount, None);
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0].name.as_str(), failed[0].value), ("node_filesystem_device_error", 1.0));
    }

    #[test]
    fn statvfs_of_a_real_directory_below_a_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        let mounts = [
            Mount { device: "d".into(), mount_point: "/data".into(), fs_type: "ext4".into(), read_only: false },
            Mount { device: "gone".into(), mount_point: "/missing".into(), fs_type: "ext4".into(), read_only: false },
        ];
        let metrics = stat_mounts(&mounts, &default_filter(), root.path());
        let size = metrics.iter().find(|m| m.name == "node_filesystem_size_bytes").unwrap();
        assert!(size.value > 0.0);
        assert_eq!(size.labels.get("mountpoint"), Some("/data"), "reported as the host sees it, without the root");
        let error = metrics.iter().find(|m| m.labels.get("device") == Some("gone")).unwrap();
        assert_eq!((error.name.as_str(), error.value), ("node_filesystem_device_error", 1.0));
    }
}
