//! Golden files under `tests/golden/`: a test renders something (a plan, a
//! document) and compares it with the file. `UPDATE_GOLDEN=1` rewrites the
//! files after an intended change; review the diff like code.

use std::path::PathBuf;

/// The golden file `relative` (under `tests/golden/`).
pub fn path(relative: &str) -> PathBuf {
    crate::workspace_root().join("tests/golden").join(relative)
}

/// Compares `text` with the golden file `relative`, panicking with the
/// first differing lines; with `UPDATE_GOLDEN` set, writes it first.
pub fn check(relative: &str, text: &str) {
    let path = path(relative);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if text != want {
        let first = want
            .lines()
            .zip(text.lines())
            .position(|(w, g)| w != g)
            .unwrap_or_else(|| want.lines().count().min(text.lines().count()));
        let show = |s: &str| s.lines().skip(first).take(6).collect::<Vec<_>>().join("\n");
        panic!(
            "{} differs from the golden file at line {} (UPDATE_GOLDEN=1 to accept):\n--- want\n{}\n--- got\n{}",
            relative,
            first + 1,
            show(&want),
            show(text)
        );
    }
}
