//! The dependency rule, checked: every module of `src/` imports only from its
//! own layer and the layers below it, and the wire formats stay pure.
//!
//! The layers, lowest first, are those of `src/lib.rs`'s map and
//! `docs/architecture.md`. A `crate::…` path in code (comments are skipped) that
//! names a module of a higher layer fails this test with the file, line and
//! path, so an upward `use` cannot land.

use std::path::{Path, PathBuf};

/// Each top-level module of the crate, and its layer (0 = lowest).
const LAYERS: &[(&str, usize)] = &[
    ("protocol", 0),
    ("config", 1),
    ("metrics", 1),
    ("session_token", 1),
    ("backend_signature", 1),
    ("limits", 1),
    ("logs", 1),
    ("cluster", 2),
    ("session", 3),
    ("engine", 3),
    ("transport", 3),
    ("app_session", 4),
    ("auth", 4),
    ("io", 4),
    ("client", 4),
    ("namespace", 4),
    ("socket", 4),
    ("broadcast", 4),
    ("component", 5),
    ("mothership", 6),
    ("api", 7),
    ("server", 7),
    ("drain", 7),
    ("stats", 7),
    ("node_control", 7),
    ("healthcheck", 7),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

/// `src/cluster/redis/mod.rs` → `cluster`; `src/lib.rs` and `src/main.rs` → None
/// (the crate root and the binary may use everything).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (module != "lib" && module != "main").then(|| module.to_string())
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

/// The code of a line: what is left once a `//` comment is cut off.
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// Every `crate::name` path in a piece of code.
fn crate_paths(code: &str) -> Vec<&str> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        paths.push(&after[..end]);
        rest = &after[end..];
    }
    paths
}

/// Every import of a higher layer, as `file:line: path` lines.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let own = layer_of(&module)
            .unwrap_or_else(|| panic!("src module `{module}` has no layer in tests/layers.rs"));
        let text = std::fs::read_to_string(&file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            for path in crate_paths(code(line)) {
                let Some(layer) = layer_of(path) else {
                    continue;
                };
                if layer > own {
                    found.push(format!(
                        "{}:{}: `{module}` (layer {own}) uses `crate::{path}` (layer {layer})",
                        file.display(),
                        number + 1
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn dependencies_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "upward dependencies:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_wire_formats_do_no_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            let code = code(line);
            for banned in ["tokio", "std::net", "std::fs", "std::time", "std::thread"] {
                assert!(
                    !code.contains(banned),
                    "{}:{}: `protocol` is pure but uses {banned}",
                    file.display(),
                    number + 1
                );
            }
        }
    }
}

#[test]
fn the_checker_sees_an_upward_use() {
    let dir = std::env::temp_dir().join(format!("rain-layers-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("cluster")).unwrap();
    std::fs::write(
        src.join("cluster/mod.rs"),
        "//! uses crate::mothership only in a comment\nuse crate::protocol::payload::Payload;\nuse crate::mothership::Routed; // upward\n",
    )
    .unwrap();
    let found = violations(&src);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("mod.rs:3") && found[0].contains("crate::mothership"));
}
