//! Every line of Jellyfin's command-line corpus (`cmdlines.json`, CONTRACT.md §12):
//! split with .NET's rules, parsed, rendered back byte-identically, and classified
//! as a Jellyfin administrator would expect. The expectations live in
//! `tests/data/corpus-decisions.txt`, one readable line per corpus entry.
//!
//! After a deliberate change of the classifier, regenerate the file with
//! `FFCLUSTER_BLESS=1 cargo test --test corpus` and review the diff.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use ffcluster::ffmpeg::decision::{OutputShape, classify_cmdline};
use ffcluster::ffmpeg::{CmdlineError, CommandLine};
use serde::Deserialize;
use support::dotnet_args;

#[derive(Deserialize)]
struct Entry {
    kind: String,
    argv_string: String,
    complete: bool,
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// `index | field | field…` lines, comments and blanks skipped.
fn table(name: &str) -> BTreeMap<usize, Vec<String>> {
    let text = std::fs::read_to_string(data(name)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split(" | ").map(|p| p.trim().to_owned());
            let idx = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("bad line in {name}: {l}"));
            (idx, parts.collect())
        })
        .collect()
}

/// Parses one corpus entry, completing a truncated one as the completions file says.
fn parse_entry(idx: usize, e: &Entry, completions: &BTreeMap<usize, Vec<String>>) -> (Vec<String>, CommandLine) {
    let mut argv = dotnet_args::split(&e.argv_string);
    let as_reported = CommandLine::parse(&argv);
    if e.complete {
        let cl = as_reported.unwrap_or_else(|err| panic!("#{idx} {}: {err}", e.kind));
        return (argv, cl);
    }
    if matches!(as_reported, Err(CmdlineError::MissingArgument(_) | CmdlineError::UnrecognizedOption(_))) {
        argv.pop();
    }
    if let Some(tail) = completions.get(&idx) {
        argv.extend(dotnet_args::split(&tail[0]));
    }
    let cl = CommandLine::parse(&argv).unwrap_or_else(|err| panic!("#{idx} {} (completed): {err}", e.kind));
    (argv, cl)
}

#[test]
fn corpus_parses_round_trips_and_matches_golden_decisions() {
    let path = support::corpus_path();
    let entries: Vec<Entry> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(entries.len() >= 32, "corpus at {} has {} entries", path.display(), entries.len());
    let completions = table("corpus-completions.txt");
    let golden = table("corpus-decisions.txt");

    let mut actual = String::new();
    let mut mismatches = Vec::new();
    for (idx, e) in entries.iter().enumerate() {
        let (argv, cl) = parse_entry(idx, e, &completions);
        assert_eq!(cl.to_args(), argv, "#{idx} {}: rendering differs from the argument list", e.kind);
        assert!(!cl.outputs.is_empty(), "#{idx} {}: no output found", e.kind);

        let v = classify_cmdline(&cl);
        let outputs = v.outputs.iter().map(OutputShape::to_string).collect::<Vec<_>>().join(", ");
        let row = vec![e.kind.clone(), v.decision.as_str().to_owned(), v.reason.as_str().to_owned(), outputs];
        let _ = writeln!(actual, "{idx} | {}", row.join(" | "));
        match golden.get(&idx) {
            Some(want) if *want == row => {}
            Some(want) => mismatches.push(format!("#{idx}: expected {want:?}\n      got {row:?}")),
            None => mismatches.push(format!("#{idx}: no expectation for {row:?}")),
        }
    }

    if std::env::var_os("FFCLUSTER_BLESS").is_some() {
        let header = "# What the shim decides for every line of Jellyfin's corpus (cmdlines.json, CONTRACT.md §12).\n\
                      # Regenerate with FFCLUSTER_BLESS=1 cargo test --test corpus, then review the diff.\n\
                      #\n# index | kind (from the corpus) | decision | reason | output shapes\n";
        std::fs::write(data("corpus-decisions.txt"), format!("{header}{actual}")).unwrap();
        return;
    }
    assert!(mismatches.is_empty(), "decisions differ from tests/data/corpus-decisions.txt:\n{}", mismatches.join("\n"));
}

#[test]
fn every_corpus_argument_survives_dotnet_splitting() {
    // Spot checks of CONTRACT.md §1.3 on real lines: quoted paths lose their
    // quotes, filter escapes keep their backslashes, empty "" stays an argument.
    let entries: Vec<Entry> = serde_json::from_str(&std::fs::read_to_string(support::corpus_path()).unwrap()).unwrap();
    let all: Vec<Vec<String>> = entries.iter().map(|e| dotnet_args::split(&e.argv_string)).collect();
    assert!(all.iter().flatten().any(|a| a.starts_with("file:/") && a.contains(' ')), "quoted file: paths with spaces");
    assert!(all.iter().flatten().any(|a| a.contains(r"\,")), "filter escapes survive");
    assert!(all.iter().flatten().all(|a| !a.starts_with("file:\"")), "no quote left on file: inputs");
}
