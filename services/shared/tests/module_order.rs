//! The modules of `shippy-shared` depend one way: each may use only the modules listed before it
//! in [`ORDER`] (and its own submodules). This test reads the sources and fails on any `crate::`
//! path, in code or in doc links, that runs back up the order, so an import circle cannot creep in.

use std::{fs, path::Path};

/// Lowest first. Keep in step with the table in `src/lib.rs` and docs/ARCHITECTURE.md.
const ORDER: &[&str] = &[
    "catalog",
    "validate",
    "idempotency",
    "page",
    "call_metrics",
    "write_shaping",
    "config",
    "etcd",
    "centre",
    "discovery",
    "probe",
    "store",
    "status",
    "auth",
    "runtime",
];

/// The top-level module a source file belongs to (`src/discovery/etcd.rs` → `discovery`).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every top-level module named by a `crate::` path in `text`, including `use crate::{a, b::c}`.
fn crate_references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A use group: the first segment of each item, up to the matching brace.
            let mut depth = 1;
            let mut end = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            found.push(name);
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_depend_only_on_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let Some(module) = module_of(relative) else {
            continue;
        };
        if module == "lib" {
            continue;
        }
        let rank = ORDER
            .iter()
            .position(|m| *m == module)
            .unwrap_or_else(|| panic!("module {module} is missing from ORDER"));
        let text = fs::read_to_string(&file).expect("read source");
        for used in crate_references(&text) {
            match ORDER.iter().position(|m| *m == used) {
                Some(at) if at <= rank => {}
                Some(_) => problems.push(format!("{} uses crate::{used}", relative.display())),
                None => problems.push(format!(
                    "{} uses crate::{used}, which is not in ORDER",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports running back up:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reference_parser_sees_use_groups() {
    let text = "use crate::{\n    config::{self, X},\n    etcd::Etcd,\n};\n/// [`crate::store`]";
    assert_eq!(crate_references(text), ["config", "etcd", "store"]);
}
