//! The crate's layers, checked: a module may use only modules of a lower layer, so that no
//! arrow runs up the tree (the device knows nothing of gating, the UAPI protocol nothing of
//! the controller). The test reads the sources, so a new upward `use` fails it.

/// Every top-level module with its layer. A module may import from a strictly lower layer.
pub const LAYERS: &[(&str, u8)] = &[
    // Plain data and leaf helpers.
    ("allowed_ips", 0),
    ("host", 0),
    ("keys", 0),
    ("sched", 0),
    ("supervise", 0),
    ("wgcfg", 0),
    // The data plane, the file format and the reachability probe.
    ("config", 1),
    ("device", 1),
    ("probe", 1),
    ("reresolve", 1),
    ("relay", 1),
    ("stun", 1),
    // The transports implement the device's traits; gating builds on the config; the `wg`
    // protocol reports the device's errors.
    ("gate", 2),
    ("tun", 2),
    ("uapi", 2),
    ("udp", 2),
    // Readers of the device and the gate.
    ("join", 3),
    ("metrics", 3),
    ("show", 3),
    // The orchestration and the command line.
    ("cli", 4),
    ("daemon", 4),
    ("demo", 4),
];

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::LAYERS;

    fn layer(module: &str) -> Option<u8> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
    }

    /// The `.rs` files of module `name`: `name.rs` and everything under `name/`.
    fn files(src: &Path, name: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let file = src.join(format!("{name}.rs"));
        if file.is_file() {
            out.push(file);
        }
        let mut dirs = vec![src.join(name)];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        out
    }

    /// The top-level modules that `text` names as `crate::x`, outside comments.
    fn uses(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `meshtun_crate::` and the like are not this crate.
                let before = code[..i].chars().last();
                if !name.is_empty() && !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    found.push(name);
                }
            }
        }
        found
    }

    #[test]
    fn every_module_is_in_a_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        for line in lib.lines() {
            if let Some(name) = line.trim().strip_prefix("pub mod ") {
                let name = name.trim_end_matches(';');
                if name != "layering" {
                    assert!(
                        layer(name).is_some(),
                        "module {name} has no layer in layering.rs"
                    );
                }
            }
        }
    }

    #[test]
    fn no_module_uses_one_of_its_own_layer_or_above() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut upward = Vec::new();
        for (module, level) in LAYERS {
            for file in files(&src, module) {
                let text = std::fs::read_to_string(&file).unwrap();
                for used in uses(&text) {
                    let Some(used_level) = layer(&used) else {
                        continue;
                    };
                    if used != *module && used_level >= *level {
                        upward.push(format!("{} uses crate::{used}", file.display()));
                    }
                }
            }
        }
        upward.sort();
        upward.dedup();
        assert!(
            upward.is_empty(),
            "arrows up the tree:\n{}",
            upward.join("\n")
        );
    }

    #[test]
    fn the_check_sees_an_upward_arrow() {
        let text = "use crate::gate::GateStatus;\n// crate::daemon in a comment\nlet x = meshtun_crate::y;";
        assert_eq!(uses(text), ["gate"]);
    }
}
