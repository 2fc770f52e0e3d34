//! The shim's standard input, read by one thread for the life of the process
//! and handed to whoever runs the job at the moment: a split job's finisher,
//! then, if the split falls back, the whole job on a node.
//!
//! Two readers of descriptor 0 would race for every byte: a finisher's
//! forwarder left blocked in `read` after a fallback would swallow the `q`
//! Jellyfin sends to the run that replaced it. Here one thread reads, bytes
//! go to the newest taker, and bytes a taker could not use (its process is
//! gone) go to the next one first.

use std::io::Read;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, MutexGuard, Once};

struct Hub {
    /// The taker now, and its number.
    sink: Option<(u64, Sender<Vec<u8>>)>,
    /// Read while nobody took them, oldest first.
    pending: Vec<Vec<u8>>,
    eof: bool,
    taken: u64,
}

static HUB: Mutex<Hub> = Mutex::new(Hub { sink: None, pending: Vec::new(), eof: false, taken: 0 });
static READER: Once = Once::new();

fn hub() -> MutexGuard<'static, Hub> {
    HUB.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One taker's share of stdin: what is read from now on, after what earlier
/// takers left; an empty vector is the end of the file. A new taker ends the
/// previous one's share.
pub struct Taker {
    id: u64,
    pub rx: Receiver<Vec<u8>>,
}

/// Takes stdin from now on (starting the reader on first use).
pub fn take() -> Taker {
    let (tx, rx) = channel();
    let id = {
        let mut hub = hub();
        hub.taken += 1;
        for bytes in hub.pending.drain(..) {
            let _ = tx.send(bytes);
        }
        if hub.eof {
            let _ = tx.send(Vec::new());
        }
        let id = hub.taken;
        hub.sink = Some((id, tx));
        id
    };
    READER.call_once(|| {
        std::thread::spawn(read_loop);
    });
    Taker { id, rx }
}

/// Ends `taker`'s share: `unused` (bytes it received but could not pass on)
/// and whatever still waits for it go to the next taker, first.
pub fn give_back(taker: Taker, unused: Vec<u8>) {
    let mut hub = hub();
    if hub.sink.as_ref().is_some_and(|(id, _)| *id == taker.id) {
        hub.sink = None;
    }
    let mut back: Vec<Vec<u8>> = std::iter::once(unused).chain(taker.rx.try_iter()).filter(|b| !b.is_empty()).collect();
    match &hub.sink {
        // A newer taker came first: it gets them now.
        Some((_, tx)) => {
            for bytes in back {
                let _ = tx.send(bytes);
            }
        }
        None => {
            back.append(&mut hub.pending);
            hub.pending = back;
        }
    }
}

fn deliver(bytes: Vec<u8>) {
    let mut hub = hub();
    if bytes.is_empty() {
        hub.eof = true;
    }
    let undelivered = match &hub.sink {
        Some((_, tx)) => tx.send(bytes).err().map(|e| e.0),
        None => Some(bytes),
    };
    if let Some(bytes) = undelivered {
        hub.sink = None;
        if !bytes.is_empty() {
            hub.pending.push(bytes);
        }
    }
}

fn read_loop() {
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 4096];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return deliver(Vec::new()),
            Ok(n) => deliver(buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return deliver(Vec::new()),
        }
    }
}
