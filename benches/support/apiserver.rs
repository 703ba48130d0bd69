//! The apiserver's own side: its write counters (`apiserver_request_total` on its `/metrics`), and
//! the floors — the same writes lynq makes, made directly.

use std::collections::BTreeMap;

use futures::StreamExt;
use kube::Client;

/// Verbs that change something.
const WRITE_VERBS: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];

/// Write requests the apiserver has served, by `resource[/subresource]`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct WriteCounts(pub BTreeMap<String, u64>);

impl WriteCounts {
    /// Reads the counters now.
    pub async fn scrape(client: &Client) -> anyhow::Result<Self> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let text = client.request_text(request).await?;
        Ok(Self::parse(&text))
    }

    /// Sums `apiserver_request_total` over write verbs, by resource and subresource.
    pub fn parse(exposition: &str) -> Self {
        let mut counts = BTreeMap::new();
        for line in exposition.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
            let Some((labels, value)) = line.rsplit_once(' ') else { continue };
            let label = |name: &str| {
                let key = format!("{name}=\"");
                labels.find(&key).and_then(|i| labels[i + key.len()..].split('"').next()).unwrap_or("")
            };
            if !WRITE_VERBS.contains(&label("verb")) {
                continue;
            }
            let key = match label("subresource") {
                "" => label("resource").to_owned(),
                sub => format!("{}/{sub}", label("resource")),
            };
            let n = value.parse::<f64>().unwrap_or(0.0) as u64;
            *counts.entry(key).or_insert(0) += n;
        }
        Self(counts)
    }

    /// What was written between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        let delta = self
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.0.get(k).copied().unwrap_or(0))))
            .filter(|(_, v)| *v > 0)
            .collect();
        Self(delta)
    }

    /// Every write counted, except those to the resources in `except`.
    pub fn total_except(&self, except: &[&str]) -> u64 {
        self.0.iter().filter(|(k, _)| !except.contains(&k.as_str())).map(|(_, v)| v).sum()
    }
}

/// Writes the control plane itself makes all the time (leader leases, the controller-manager's
/// service accounts and tokens) and the stand-in kubelet's: none of them is lynq's.
pub const NOT_LYNQ: [&str; 4] = ["leases", "deployments/status", "tokenreviews", "subjectaccessreviews"];

/// Runs `count` writes made by `write(i)` with `concurrency` in flight; returns writes per second.
pub async fn write_rate<F, Fut>(count: usize, concurrency: usize, write: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let start = std::time::Instant::now();
    let results: Vec<anyhow::Result<()>> =
        futures::stream::iter(0..count).map(write).buffer_unordered(concurrency.max(1)).collect().await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}
