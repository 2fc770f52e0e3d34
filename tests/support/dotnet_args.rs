//! How .NET on Unix turns `ProcessStartInfo.Arguments` into argv
//! (`System.Diagnostics.Process.Unix.cs`, `ParseArgumentsIntoList` /
//! `GetNextArgument`). Jellyfin builds one string; this is what ffmpeg receives.
//!
//! * spaces and tabs separate arguments outside double quotes;
//! * `"` toggles quoting; inside quotes, `""` is a literal `"`;
//! * `2n` backslashes before `"` give `n` backslashes and the quote toggles;
//!   `2n+1` give `n` backslashes and a literal `"`;
//! * backslashes not before `"` are literal; single quotes are ordinary characters.

/// Splits `s` into arguments exactly as .NET does on Unix.
pub fn split(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i == chars.len() {
            return args;
        }
        args.push(next_argument(&chars, &mut i));
    }
}

/// The inverse of [`split`]: one string that .NET splits back into `argv`
/// (each argument quoted only when it must be, backslashes before a quote
/// doubled). For scenarios whose arguments no Jellyfin template quoted.
pub fn join<S: AsRef<str>>(argv: &[S]) -> String {
    let mut out = String::new();
    for arg in argv {
        let arg = arg.as_ref();
        if !out.is_empty() {
            out.push(' ');
        }
        if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
            out.push_str(arg);
            continue;
        }
        out.push('"');
        let mut backslashes = 0;
        for c in arg.chars() {
            match c {
                '\\' => backslashes += 1,
                '"' => {
                    out.extend(std::iter::repeat_n('\\', 2 * backslashes + 1));
                    out.push('"');
                    backslashes = 0;
                    continue;
                }
                _ => {}
            }
            if c != '\\' {
                out.extend(std::iter::repeat_n('\\', backslashes));
                backslashes = 0;
                out.push(c);
            }
        }
        out.extend(std::iter::repeat_n('\\', 2 * backslashes));
        out.push('"');
    }
    out
}

fn next_argument(chars: &[char], i: &mut usize) -> String {
    let mut arg = String::new();
    let mut in_quotes = false;
    while *i < chars.len() {
        let mut backslashes = 0;
        while *i < chars.len() && chars[*i] == '\\' {
            *i += 1;
            backslashes += 1;
        }
        if backslashes > 0 {
            if *i >= chars.len() || chars[*i] != '"' {
                arg.extend(std::iter::repeat_n('\\', backslashes));
            } else {
                arg.extend(std::iter::repeat_n('\\', backslashes / 2));
                if backslashes % 2 != 0 {
                    arg.push('"');
                    *i += 1;
                }
            }
            continue;
        }
        let c = chars[*i];
        if c == '"' {
            if in_quotes && *i + 1 < chars.len() && chars[*i + 1] == '"' {
                arg.push('"');
                *i += 1;
            } else {
                in_quotes = !in_quotes;
            }
            *i += 1;
            continue;
        }
        if (c == ' ' || c == '\t') && !in_quotes {
            break;
        }
        arg.push(c);
        *i += 1;
    }
    arg
}

#[cfg(test)]
mod tests {
    use super::{join, split};

    #[test]
    fn join_splits_back() {
        let cases: &[&[&str]] = &[
            &["-i", "file:/media/My Movie.mkv", "-y", "x"],
            &["", "a\\", "a\\b", "say \"hi\"", "tail\\\\", "\\\"", "-user_agent", "Mozilla/5.0 (X11; Linux)"],
        ];
        for argv in cases {
            assert_eq!(split(&join(argv)), *argv, "{}", join(argv));
        }
    }

    #[test]
    fn contract_examples() {
        assert_eq!(split(r#"-i file:"/media/My Movie.mkv" -y x"#), ["-i", "file:/media/My Movie.mkv", "-y", "x"]);
        assert_eq!(
            split(r#"-vf "scale=trunc(min(max(iw\,ih*a)\,1920)/2)*2""#),
            ["-vf", r"scale=trunc(min(max(iw\,ih*a)\,1920)/2)*2"]
        );
        assert_eq!(split(r#"-dump_attachment:t "" -y"#), ["-dump_attachment:t", "", "-y"]);
        assert_eq!(split("-probesize 1G  -i  x"), ["-probesize", "1G", "-i", "x"]);
        assert_eq!(split("subtitles=f='/a b'"), ["subtitles=f='/a", "b'"]);
    }

    #[test]
    fn backslash_quote_rules() {
        assert_eq!(split(r#"file:"/x/A \"B\".mkv""#), [r#"file:/x/A "B".mkv"#]);
        assert_eq!(split(r#"a\\"b c""#), [r"a\b c"]);
        assert_eq!(split(r#""a""b""#), [r#"a"b"#]);
        assert_eq!(split(r"C:\dir\f.mkv"), [r"C:\dir\f.mkv"]);
        assert_eq!(split(" \t "), Vec::<String>::new());
    }
}
