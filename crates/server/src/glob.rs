//! Redis's glob matching (`stringmatchlen` of Redis 7.0, case-sensitive) for `KEYS`:
//! `*`, `?`, `[abc]`, `[^a-z]`, `\x`. Ported with its protections against abusive
//! patterns — at most 1000 nested `*`, and no retry of longer matches for an earlier
//! `*` once the rest failed everywhere — so it returns what Redis returns, also for
//! such patterns.

/// Whether `string` matches `pattern`.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    imp(pattern, string, &mut skip_longer, 0)
}

fn imp(pat: &[u8], s: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > 1000 {
        return false;
    }
    // C reads one byte past the end (the NUL terminator): 0 here.
    let at = |i: usize| pat.get(i).copied().unwrap_or(0);
    let (mut p, mut i) = (0usize, 0usize);
    while p < pat.len() && i < s.len() {
        match pat[p] {
            b'*' => {
                while p < pat.len() && at(p + 1) == b'*' {
                    p += 1;
                }
                if pat.len() - p == 1 {
                    return true;
                }
                while i < s.len() {
                    if imp(&pat[p + 1..], &s[i..], skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    i += 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => i += 1,
            b'[' => {
                p += 1;
                let not = at(p) == b'^';
                if not {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    let left = pat.len().saturating_sub(p);
                    if at(p) == b'\\' && left >= 2 {
                        p += 1;
                        if pat[p] == s[i] {
                            matched = true;
                        }
                    } else if at(p) == b']' && left >= 1 {
                        break;
                    } else if left == 0 {
                        // Unterminated class: C steps back so the loop's final
                        // advance leaves the pattern at its end.
                        p -= 1;
                        break;
                    } else if left >= 3 && pat[p + 1] == b'-' {
                        let (mut lo, mut hi) = (pat[p], pat[p + 2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        p += 2;
                        if (lo..=hi).contains(&s[i]) {
                            matched = true;
                        }
                    } else if pat[p] == s[i] {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                i += 1;
            }
            c => {
                let c = if c == b'\\' && pat.len() - p >= 2 {
                    p += 1;
                    pat[p]
                } else {
                    c
                };
                if c != s[i] {
                    return false;
                }
                i += 1;
            }
        }
        p += 1;
        if i == s.len() {
            while p < pat.len() && pat[p] == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= pat.len() && i == s.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes())
    }

    #[test]
    fn redis_glob_cases() {
        assert!(m("*", "anything"));
        // As in Redis, only the KEYS shortcut for a lone `*` lists the empty key.
        assert!(!m("*", "") && !m("a*", ""));
        assert!(m("foo*", "foo_a") && !m("foo*", "key_x"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && m("h[b-a]llo", "hallo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("h\\*llo", "h*llo") && !m("h\\*llo", "hello"));
        assert!(m("[\\]]", "]") && m("a*", "a") && m("a**", "a"));
        assert!(!m("", "a") && m("", ""));
        assert!(m("*a*b", "xxaxxb") && !m("*a*b", "xxaxx"));
        // Unterminated class: the class ends with the pattern.
        assert!(m("[ab", "a") && !m("[ab", "c"));
        assert!(!m("abc", "ab") && !m("ab", "abc"));
    }

    #[test]
    fn abusive_patterns_end_quickly_like_redis() {
        let key = "a".repeat(40);
        assert!(!m("a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", &key));
        // More than 1000 nested stars: no match (Redis's protection), and fast.
        let long = "a".repeat(50_000);
        let start = std::time::Instant::now();
        assert!(!m(&"*?".repeat(50_000), &long));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert!(m(&"*?".repeat(10), &long));
    }
}
