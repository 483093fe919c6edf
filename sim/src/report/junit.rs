//! The report's assertions as JUnit XML, the format CI systems (GitLab,
//! Jenkins, GitHub's test reporters) show as test results: one testsuite per
//! scenario run, one testcase per assertion, a failure where it failed.

use std::fmt::Write;

use super::Report;

/// XML-safe text for attributes and character data: the five escapes, and
/// characters XML 1.0 cannot hold at all dropped.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

impl Report {
    pub fn junit(&self) -> String {
        let failures = self.assertions.iter().filter(|a| !a.passed).count();
        let tests = self.assertions.len();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(out, "<testsuites name=\"voyager-sim\" tests=\"{tests}\" failures=\"{failures}\">");
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">",
            xml(&self.scenario),
            self.duration_s
        );
        out.push_str("    <properties>\n");
        for (k, v) in [
            ("seed", self.seed.to_string()),
            ("time_scale", self.time_scale.to_string()),
            ("stack", self.stack.clone()),
            ("run_id", self.run_id.clone()),
        ] {
            let _ = writeln!(out, "      <property name=\"{k}\" value=\"{}\"/>", xml(&v));
        }
        out.push_str("    </properties>\n");
        for a in &self.assertions {
            let _ = write!(
                out,
                "    <testcase classname=\"voyager-sim.{}\" name=\"{}\" time=\"0\"",
                xml(&self.scenario),
                xml(&a.name)
            );
            if a.passed {
                out.push_str("/>\n");
            } else {
                let _ = writeln!(
                    out,
                    ">\n      <failure type=\"assertion\" message=\"expected {}, got {}\"/>\n    </testcase>",
                    xml(&a.expected),
                    xml(&a.actual)
                );
            }
        }
        let _ = writeln!(out, "    <system-out>{}</system-out>", xml(&self.summary()));
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::report::Assertion;

    #[test]
    fn every_assertion_is_a_testcase_and_failures_say_what_was_expected() {
        let mut r = super::super::tests::report(false);
        r.scenario = "az-loss <b>".into();
        r.assertions.push(Assertion {
            name: "kafka recovery (RTO) after az-outage b".into(),
            expected: "<= 30.0s".into(),
            actual: "not within the run".into(),
            passed: false,
        });
        let x = r.junit();
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites"), "{x}");
        assert!(x.contains("<testsuite name=\"az-loss &lt;b&gt;\" tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("name=\"lost acknowledged writes\" time=\"0\"/>"), "{x}");
        assert!(
            x.contains("<failure type=\"assertion\" message=\"expected &lt;= 30.0s, got not within the run\"/>"),
            "{x}"
        );
        assert!(x.contains("<property name=\"seed\" value=\"7\"/>"), "{x}");
        assert_eq!(x.matches("<testcase").count(), 2);
        assert_eq!(super::xml("a\u{1}b'"), "ab&apos;");
    }
}
