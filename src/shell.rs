//! Quoting for the commands tosskey prints for an operator to paste into a root shell
//! (`escrow decrypt`'s mdadm, dmsetup and cryptsetup lines). Names and paths in them come
//! from an escrow file, which anyone holding the public key can write, and from the
//! command line: every value goes through [`quote`], so the shell sees it as one word with
//! no expansion, whatever it contains.

use std::borrow::Cow;

/// `word` as one POSIX shell word that expands to exactly `word`: unchanged when it is
/// non-empty and made only of characters no shell treats specially (letters, digits and
/// `_-./:=@%+,`), otherwise in single quotes, each `'` written as `'\''`. Inside single
/// quotes nothing is special (not `$`, backticks, `\`, newlines), so this is the whole rule.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// `words` quoted one by one and joined with spaces: a command line.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|word| quote(word.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
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
        "line\nbreak",
        "tab\there",
        "a|b&c>d<e",
        "$HOME ${IFS} $1 $@ $*",
        "*?[a-z]~",
        "-n",
        "#comment",
        "vol\u{202e}lmth.exe",
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
        let script = format!("printf '%s\\0' {}", join(HOSTILE));
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
        assert_eq!(quote("/dev/md/vol"), "/dev/md/vol");
        assert_eq!(quote("--sector-size"), "--sector-size");
        assert_eq!(quote("sector_size:4096"), "sector_size:4096");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
