//! What every parser owes its user, checked on each fuzz input: an input
//! either parses or is refused with problems that point into the text.

use voyager_sim::stack::StackError;

/// Every problem names a line and column inside `text` (a problem past the
/// end would send the user to a line that does not exist) and says what to
/// do. Rendering the error must not panic either: it is what the user sees.
pub fn assert_located(text: &str, err: &StackError) {
    assert!(!err.problems.is_empty(), "an error with no problems in it: {err:?}");
    let lines = text.split('\n').count();
    for p in &err.problems {
        assert!(p.line >= 1 && p.line <= lines, "line {} outside 1..={lines}: {p:?}", p.line);
        assert!(p.col >= 1, "column {} is not 1-based: {p:?}", p.col);
        assert!(!p.message.trim().is_empty(), "a problem with no message: {p:?}");
        assert!(!p.help.trim().is_empty(), "a problem with no help: {p:?}");
    }
    let _ = err.to_string();
}
