//! What every parser owes its user, checked on each fuzz input: an input
//! either parses or is refused with problems that point into the text.

use voyager_sim::stack::StackError;

/// Every problem, given as (line, column, message, help), names a place
/// inside `text` (a problem past the end would send the user to a line that
/// does not exist) and says what to do. The parsers' error types differ
/// (the Auth0 mock has its own) but owe the same.
pub fn assert_problems<'a>(text: &str, problems: impl IntoIterator<Item = (usize, usize, &'a str, &'a str)>) {
    let lines = text.split('\n').count();
    let mut n = 0;
    for (line, col, message, help) in problems {
        n += 1;
        assert!(line >= 1 && line <= lines, "line {line} outside 1..={lines}: {message}");
        assert!(col >= 1, "column {col} is not 1-based: {message}");
        assert!(!message.trim().is_empty(), "a problem with no message at {line}:{col}");
        assert!(!help.trim().is_empty(), "a problem with no help: {message}");
    }
    assert!(n > 0, "an error with no problems in it");
}

/// [`assert_problems`] for the simulator's own files. Rendering the error
/// must not panic either: it is what the user sees.
pub fn assert_located(text: &str, err: &StackError) {
    assert_problems(text, err.problems.iter().map(|p| (p.line, p.col, p.message.as_str(), p.help.as_str())));
    let _ = err.to_string();
}
