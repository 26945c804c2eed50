//! The `host` source of a `MetricInput`: metrics of the machine the collector runs on, read from
//! `/proc`, `/sys` and `statfs`, named, labelled and typed exactly as Prometheus' node_exporter
//! names them (see docs/host-metrics.md for the families covered).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// node_exporter's default `--collector.filesystem.mount-points-exclude`.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter's default `--collector.filesystem.fs-types-exclude`.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";
/// node_exporter's default `--collector.diskstats.device-exclude` (partitions, RAM, loop and
/// floppy devices).
pub const DEFAULT_DISK_DEVICE_EXCLUDE: &str = "^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$";

/// Host metrics of the node the collector runs on (use with `placement.mode: EveryNode`).
/// Samples carry node_exporter's names and labels plus `job="<namespace>/<name>"` and
/// `instance="<node name>"` (the collector's `NODE_NAME`, else its host name).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.procPath.startsWith('/') && self.sysPath.startsWith('/') && self.rootfsPath.startsWith('/')").message("host.procPath, host.sysPath and host.rootfsPath must be absolute paths"))]
pub struct HostSource {
    /// Which node_exporter collectors to run: `cpu`, `meminfo`, `loadavg`, `diskstats`,
    /// `filesystem`, `netdev`, `stat`. All of them when unset.
    #[serde(default = "default_collectors")]
    #[schemars(length(min = 1, max = 16), extend("x-kubernetes-list-type" = "set"))]
    pub collectors: Vec<HostCollector>,
    /// Where the host's procfs is mounted (node_exporter's `--path.procfs`). In a pod, mount the
    /// host's `/proc` read-only (the chart's `daemonset.hostMetrics` mounts it at `/host/proc`).
    #[serde(default = "default_proc_path")]
    #[schemars(length(min = 1, max = 4096))]
    pub proc_path: String,
    /// Where the host's sysfs is mounted (node_exporter's `--path.sysfs`).
    #[serde(default = "default_sys_path")]
    #[schemars(length(min = 1, max = 4096))]
    pub sys_path: String,
    /// Where the host's root filesystem is mounted (node_exporter's `--path.rootfs`): mount points
    /// are `statfs`ed below it and reported without it.
    #[serde(default = "default_rootfs_path")]
    #[schemars(length(min = 1, max = 4096))]
    pub rootfs_path: String,
    /// Which mounted filesystems the `filesystem` collector reports.
    #[serde(default)]
    pub filesystem: FilesystemFilter,
    /// Which block devices the `diskstats` collector reports; unset: node_exporter's default
    /// exclusion of partitions, RAM, loop and floppy devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diskstats: Option<DeviceFilter>,
    /// Which network interfaces the `netdev` collector reports; unset: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netdev: Option<DeviceFilter>,
}

impl Default for HostSource {
    fn default() -> Self {
        Self {
            collectors: default_collectors(),
            proc_path: default_proc_path(),
            sys_path: default_sys_path(),
            rootfs_path: default_rootfs_path(),
            filesystem: FilesystemFilter::default(),
            diskstats: None,
            netdev: None,
        }
    }
}

/// One node_exporter collector.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostCollector {
    /// `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total` from `/proc/stat`.
    Cpu,
    /// `node_memory_*` from `/proc/meminfo`.
    Meminfo,
    /// `node_load1`, `node_load5`, `node_load15` from `/proc/loadavg`.
    Loadavg,
    /// `node_disk_*{device}` from `/proc/diskstats`.
    Diskstats,
    /// `node_filesystem_*{device,fstype,mountpoint}` from the host's mounts and `statfs`.
    Filesystem,
    /// `node_network_*{device}` from `/proc/net/dev`.
    Netdev,
    /// `node_boot_time_seconds`, `node_context_switches_total`, `node_forks_total`,
    /// `node_intr_total`, `node_procs_running`, `node_procs_blocked` from `/proc/stat`.
    Stat,
}

impl HostCollector {
    /// Every collector, in name order.
    pub const ALL: [Self; 7] =
        [Self::Cpu, Self::Diskstats, Self::Filesystem, Self::Loadavg, Self::Meminfo, Self::Netdev, Self::Stat];

    /// node_exporter's name of the collector.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Meminfo => "meminfo",
            Self::Loadavg => "loadavg",
            Self::Diskstats => "diskstats",
            Self::Filesystem => "filesystem",
            Self::Netdev => "netdev",
            Self::Stat => "stat",
        }
    }
}

/// Which filesystems are reported, by regular expressions searched (not anchored unless they
/// say so) in the mount point and the filesystem type, as node_exporter's flags.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemFilter {
    /// Mount points not reported (node_exporter's `--collector.filesystem.mount-points-exclude`,
    /// same default).
    #[serde(default = "default_mount_points_exclude")]
    #[schemars(length(max = 4096))]
    pub mount_points_exclude: String,
    /// Filesystem types not reported (node_exporter's `--collector.filesystem.fs-types-exclude`,
    /// same default: pseudo and container filesystems).
    #[serde(default = "default_fs_types_exclude")]
    #[schemars(length(max = 4096))]
    pub fs_types_exclude: String,
}

impl Default for FilesystemFilter {
    fn default() -> Self {
        Self { mount_points_exclude: default_mount_points_exclude(), fs_types_exclude: default_fs_types_exclude() }
    }
}

/// Which devices are reported, by a regular expression searched in the device name (not
/// anchored unless it says so). At most one of the two may be set, as in node_exporter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.deviceInclude) && has(self.deviceExclude))").message("at most one of deviceInclude and deviceExclude may be set"))]
pub struct DeviceFilter {
    /// Only devices matching this are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub device_include: Option<String>,
    /// Devices matching this are not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub device_exclude: Option<String>,
}

fn default_collectors() -> Vec<HostCollector> {
    HostCollector::ALL.to_vec()
}

fn default_proc_path() -> String {
    "/proc".to_owned()
}

fn default_sys_path() -> String {
    "/sys".to_owned()
}

fn default_rootfs_path() -> String {
    "/".to_owned()
}

fn default_mount_points_exclude() -> String {
    DEFAULT_MOUNT_POINTS_EXCLUDE.to_owned()
}

fn default_fs_types_exclude() -> String {
    DEFAULT_FS_TYPES_EXCLUDE.to_owned()
}
