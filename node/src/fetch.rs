//! Whole-file HTTP GET of a job's side files (subtitles, fonts, LUTs) from the
//! controller's relay into scratch, with the product's one HTTP client
//! (`ffcluster::http`, ureq, the node's `tls_ca` trust for an `https://`
//! controller) on a blocking thread. ffmpeg reads the inputs itself.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, ensure};
use ffcluster::http::Timeouts;
use ffcluster::tls::Trust;

/// No progress for this long and the download fails.
const IDLE: Duration = Duration::from_secs(30);

/// Downloads `url` into a new file `dest` and returns its size, which must be
/// `expected` (the size the shim offered). An `https://` URL is verified against
/// `trust`.
pub async fn download(url: &str, trust: &Trust, dest: &Path, expected: u64) -> anyhow::Result<u64> {
    let (url, trust, dest) = (url.to_owned(), trust.clone(), dest.to_owned());
    tokio::task::spawn_blocking(move || download_blocking(&url, &trust, &dest, expected)).await?
}

fn download_blocking(url: &str, trust: &Trust, dest: &Path, expected: u64) -> anyhow::Result<u64> {
    let mut file = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let timeouts = Timeouts { connect: IDLE, io: IDLE };
    let (status, size) = ffcluster::http::download(url, trust, timeouts, &mut file)?;
    ensure!(status == 200, "GET {url}: HTTP status {status}");
    file.sync_data().ok();
    ensure!(size == expected, "GET {url}: got {size} bytes, the shim offered {expected}");
    Ok(size)
}
