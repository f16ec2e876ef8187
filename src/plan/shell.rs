//! Quoting for the commands tosskey prints for an operator to paste into a root shell
//! (`escrow decrypt`'s mdadm, dmsetup and cryptsetup lines), for any POSIX sh. Names and
//! paths in them come from an escrow file, which anyone holding the public key can write,
//! and from the command line: every value goes through [`quote`], so the shell sees it as
//! one word with no expansion, whatever it contains, and a value the operator could not
//! read back from the screen (a control character, a bidi override, any non-ASCII
//! character) is refused rather than printed.

use std::borrow::Cow;

use crate::error::{Error, Refusal};

/// The first line `escrow decrypt` prints above its commands: which shell they are for.
pub const HEADER: &str =
    "# POSIX sh commands (sh, dash, bash): run them as root, in this order, bottom node first";

/// `word` as one POSIX shell word that expands to exactly `word`: unchanged when it is
/// non-empty and made only of characters no shell treats specially (letters, digits and
/// `_-./:=@%+,`), otherwise in single quotes, each `'` written as `'\''`. Inside single
/// quotes nothing is special (not `$`, backticks, `\`), so this is the whole rule for what
/// the shell runs. What the operator sees is another matter: a newline, escape sequence or
/// bidi override inside the quotes makes the printed line read differently from what it
/// runs, and POSIX sh has no other quoting that shows them (`$'…'` is not in dash). So a
/// word with anything but printable ASCII is refused, naming the character.
pub fn quote(word: &str) -> Result<Cow<'_, str>, Error> {
    if let Some(bad) = word.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(Error::Refused(Refusal::Unprintable {
            word: word.to_owned(),
            bad,
        }));
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        Ok(Cow::Borrowed(word))
    } else {
        Ok(Cow::Owned(format!("'{}'", word.replace('\'', r"'\''"))))
    }
}

/// `words` quoted one by one and joined with spaces: a command line.
pub fn join<S: AsRef<str>>(words: &[S]) -> Result<String, Error> {
    Ok(words
        .iter()
        .map(|word| quote(word.as_ref()))
        .collect::<Result<Vec<_>, _>>()?
        .join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile strings: every shell metacharacter, expansions, quotes, whitespace.
    const HOSTILE: &[&str] = &[
        "",
        "plain-name_1.0",
        "a b",
        "x; reboot",
        "$(touch /tmp/pwned)",
        "`id`",
        "it's",
        "'",
        "''",
        "\"q\" \\ \\\\",
        "a|b&c>d<e",
        "$HOME ${IFS} $1 $@ $*",
        "*?[a-z]~",
        "-n",
        "#comment",
        "!history",
        "{a,b}",
    ];

    /// What `sh -c <script>` prints on stdout.
    fn sh(script: &str) -> Vec<u8> {
        let output = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(output.status.success(), "{script:?}: {output:?}");
        output.stdout
    }

    #[test]
    fn every_quoted_word_reaches_the_command_unchanged() {
        // `printf '%s\0' WORD...` prints each argument the shell passed, NUL-terminated: the
        // quoted line must give back exactly the original words, no more, no fewer.
        let script = format!("printf '%s\\0' {}", join(HOSTILE).unwrap());
        let printed = sh(&script);
        let words: Vec<&[u8]> = printed.split(|&b| b == 0).collect();
        let (last, words) = words.split_last().unwrap();
        assert!(last.is_empty());
        assert_eq!(words.len(), HOSTILE.len(), "{script}");
        for (word, expected) in words.iter().zip(HOSTILE) {
            assert_eq!(*word, expected.as_bytes(), "{script}");
        }
    }

    #[test]
    fn plain_words_stay_readable() {
        let quoted = |word| quote(word).unwrap();
        assert_eq!(quoted("/dev/md/vol"), "/dev/md/vol");
        assert_eq!(quoted("--sector-size"), "--sector-size");
        assert_eq!(quoted("sector_size:4096"), "sector_size:4096");
        assert_eq!(quoted("a b"), "'a b'");
        assert_eq!(quoted("it's"), r"'it'\''s'");
        assert_eq!(quoted(""), "''");
    }

    #[test]
    fn a_word_the_operator_could_not_read_back_is_refused() {
        // A newline or escape sequence changes what the printed line looks like, a bidi
        // override reverses it on screen, non-ASCII can imitate ASCII (Cyrillic "а").
        for word in [
            "line\nbreak",
            "tab\there",
            "esc\u{1b}[2K",
            "del\u{7f}",
            "vol\u{202e}lmth.exe",
            "/dev/v\u{430}b",
            "caf\u{e9}",
        ] {
            let error = quote(word).unwrap_err();
            let text = crate::error::render(&error);
            assert_eq!(error.exit_code(), crate::error::REFUSED, "{text}");
            assert!(text.contains("not printable ASCII"), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(join(&["ok", word]).is_err(), "{word:?}");
        }
    }
}
