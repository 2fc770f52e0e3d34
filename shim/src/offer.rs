//! What the shim lets the cluster read, decided before anything is sent.
//!
//! Only the files the command line references are offered (inputs, and files
//! named in filter arguments); the controller can ask for byte ranges of those and
//! nothing else. Network inputs the shim relays (`relay_inputs`) are offered as
//! streams, read from the origin by [`Origin`]. Anything a local ffmpeg would complain about (a missing input, a
//! missing output directory, an existing output without `-y`) is left to the
//! local ffmpeg, so its own error text and exit code reach Jellyfin.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ffcluster::ffmpeg::CommandLine;
use ffcluster::ffmpeg::url::Target;
use ffcluster::protocol::FileOffer;
use ffcluster::remote::{Site, file_refs};

use crate::config::RelayInputs;
use crate::origin::{self, Origin};

/// The offered files and where they are on this machine.
#[derive(Debug, Default)]
pub struct Offers {
    pub offers: Vec<FileOffer>,
    paths: Vec<PathBuf>,
    /// Opened on first read and kept: a film is read in thousands of ranges.
    open: Vec<OnceCell<File>>,
    /// Relayed network inputs, by offer id.
    streams: HashMap<u32, Arc<Origin>>,
}

impl Offers {
    /// Checks the command line can run remotely and collects its files. The error
    /// says why it should run locally instead.
    pub fn prepare(cl: &CommandLine, cwd: &Path, relay: RelayInputs) -> Result<Offers, String> {
        let refs = file_refs(cl).map_err(|e| e.to_string())?;
        let mut out = Offers::default();
        let mut relayed = Vec::new();
        for r in refs {
            if out.offers.iter().any(|o| o.reference == r.path) {
                continue;
            }
            if r.network {
                if let Site::Input(n) = r.site
                    && origin::relayed(&r.path, relay, &origin::own_addresses)
                {
                    relayed.push(n);
                }
                continue;
            }
            let path = cwd.join(&r.path);
            let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", r.path))?;
            if r.dir {
                let mut entries: Vec<_> = std::fs::read_dir(&path)
                    .map_err(|e| format!("{}: {e}", r.path))?
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .collect();
                entries.sort_by_key(|e| e.file_name());
                for e in entries {
                    let Ok(name) = e.file_name().into_string() else { continue };
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push(r.path.clone(), Some(name), size, e.path());
                }
                if !out.offers.iter().any(|o| o.reference == r.path) {
                    // An empty directory is still a directory the node must create.
                    out.push(r.path.clone(), Some(String::new()), 0, path);
                }
            } else if meta.is_file() {
                out.push(r.path.clone(), None, meta.len(), path);
            } else {
                return Err(format!("{} is not a regular file", r.path));
            }
        }
        check_outputs(cl, cwd)?;
        // Last: connecting to an origin is the one step with an effect elsewhere.
        for n in relayed {
            let input = &cl.inputs[n];
            if out.offers.iter().any(|o| o.reference == input.url.raw) {
                continue;
            }
            let origin = Origin::open(input)?;
            let id = out.offers.len() as u32;
            out.push(input.url.raw.clone(), None, 0, PathBuf::new());
            out.offers[id as usize].stream = true;
            out.streams.insert(id, Arc::new(origin));
        }
        Ok(out)
    }

    /// The relayed stream behind offer `id`, if it is one.
    pub fn stream(&self, id: u32) -> Option<Arc<Origin>> {
        self.streams.get(&id).cloned()
    }

    fn push(&mut self, reference: String, entry: Option<String>, size: u64, path: PathBuf) {
        let id = self.offers.len() as u32;
        self.offers.push(FileOffer { id, reference, entry, size, stream: false });
        self.paths.push(path);
        self.open.push(OnceCell::new());
    }

    /// Reads up to `len` bytes of offered file `id` at `offset` (fewer at end of file).
    pub fn read(&self, id: u32, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let i = id as usize;
        let path = self.paths.get(i).ok_or_else(|| std::io::Error::other("no such file offered"))?;
        if self.streams.contains_key(&id) {
            return Err(std::io::Error::other("a stream is read with Offers::stream"));
        }
        let file = match self.open[i].get() {
            Some(f) => f,
            None => {
                let f = File::open(path)?;
                self.open[i].get_or_init(|| f)
            }
        };
        let mut buf = vec![0u8; len as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }
}

/// Outputs must land where a local ffmpeg could write them without asking.
fn check_outputs(cl: &CommandLine, cwd: &Path) -> Result<(), String> {
    let overwrite = cl.global_flag("y");
    for o in &cl.outputs {
        let Target::File { path } = &o.url.target else { continue };
        let full = cwd.join(path);
        let dir = full.parent().unwrap_or(cwd);
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(format!("output directory of {path} does not exist"));
        }
        if !overwrite && full.exists() {
            return Err(format!("{path} exists and -y was not given (ffmpeg would ask)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(args: &[&str]) -> CommandLine {
        CommandLine::parse(args).unwrap()
    }

    #[test]
    fn offers_inputs_and_fonts_and_reads_ranges() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("in.mkv"), b"0123456789").unwrap();
        std::fs::create_dir(d.path().join("fonts")).unwrap();
        std::fs::write(d.path().join("fonts/b.ttf"), b"bb").unwrap();
        std::fs::write(d.path().join("fonts/a.ttf"), b"a").unwrap();
        std::fs::write(d.path().join("s.srt"), b"1").unwrap();
        let c = cl(&["-i", "in.mkv", "-vf", "subtitles=f=s.srt:fontsdir=fonts", "-c:v", "libx264", "-y", "o.mp4"]);
        let o = Offers::prepare(&c, d.path(), RelayInputs::Local).unwrap();
        let names: Vec<_> = o.offers.iter().map(|f| (f.reference.as_str(), f.entry.as_deref(), f.size)).collect();
        assert_eq!(
            names,
            [("in.mkv", None, 10), ("s.srt", None, 1), ("fonts", Some("a.ttf"), 1), ("fonts", Some("b.ttf"), 2)]
        );
        assert_eq!(o.read(0, 3, 4).unwrap(), b"3456");
        assert_eq!(o.read(0, 8, 4).unwrap(), b"89");
        assert!(o.read(9, 0, 1).is_err());
    }

    #[test]
    fn leaves_what_ffmpeg_would_refuse_to_ffmpeg() {
        let d = tempfile::tempdir().unwrap();
        let missing = cl(&["-i", "nope.mkv", "-c:v", "libx264", "-y", "o.mp4"]);
        assert!(Offers::prepare(&missing, d.path(), RelayInputs::Local).unwrap_err().contains("nope.mkv"));
        std::fs::write(d.path().join("in.mkv"), b"x").unwrap();
        std::fs::write(d.path().join("o.mp4"), b"x").unwrap();
        let no_y = cl(&["-i", "in.mkv", "-c:v", "libx264", "o.mp4"]);
        assert!(Offers::prepare(&no_y, d.path(), RelayInputs::Local).unwrap_err().contains("-y"));
        let no_dir = cl(&["-i", "in.mkv", "-c:v", "libx264", "-y", "nodir/o.mp4"]);
        assert!(Offers::prepare(&no_dir, d.path(), RelayInputs::Local).unwrap_err().contains("directory"));
    }
}
