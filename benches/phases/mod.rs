//! The phases of the end-to-end benchmark, in the order they run.

pub mod floors;
pub mod latency;
pub mod load;
pub mod resync;

use std::path::PathBuf;

use kube::Client;

use crate::support::{Scale, env::Env, kubelet::StandInKubelet, timeline::Timeline};

/// What every phase uses.
pub struct Ctx {
    /// The local environment.
    pub env: Env,
    /// Admin client.
    pub client: Client,
    /// Watch-based timelines of every node and ConfigMap.
    pub timeline: Timeline,
    /// Marks Deployments ready.
    pub kubelet: StandInKubelet,
    /// Sizes.
    pub scale: Scale,
    /// Where operator logs go.
    pub log_dir: PathBuf,
}

impl Ctx {
    /// Path of a log file of this run.
    pub fn log(&self, name: &str) -> PathBuf {
        self.log_dir.join(name)
    }
}
