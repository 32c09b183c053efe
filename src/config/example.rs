//! `parley.example.toml` documents every key the configuration accepts, and nothing it does not.
//!
//! The keys the configuration accepts are found by asking the deserializer itself: a key no struct knows
//! (`__probe__`) at a table makes serde name every field that table accepts ("unknown field `__probe__`, expected one
//! of …"), so a new field shows up here the moment it is added to a struct, with no list to keep. The documented keys
//! are read from the example file's lines, commented out or not (`# model = "nova-3"` documents `model`), under the
//! section header above them (`[stt.deepgram]`, `# [[mcp.servers]]`).

use std::collections::BTreeSet;

use super::Config;

const PROBE: &str = "__probe__";

/// One step from the root table to a nested one: the key, whether its value is an array of tables, and the tag of
/// an internally tagged enum (`type = "http"`).
#[derive(Debug, Clone)]
struct Step {
    key: String,
    array: bool,
    tag: Option<(String, String)>,
}

/// The root table with `content` placed at the end of `steps`.
fn nest(steps: &[Step], content: toml::Table) -> toml::Value {
    let mut value = toml::Value::Table(content);
    for step in steps.iter().rev() {
        if let (Some((tag_key, variant)), toml::Value::Table(table)) = (&step.tag, &mut value) {
            table.insert(tag_key.clone(), toml::Value::String(variant.clone()));
        }
        if step.array {
            value = toml::Value::Array(vec![value]);
        }
        let mut parent = toml::Table::new();
        parent.insert(step.key.clone(), value);
        value = toml::Value::Table(parent);
    }
    value
}

/// What the deserializer says about `content` at `steps`.
fn complaint(steps: &[Step], content: toml::Table) -> Option<String> {
    complaint_at(steps, content).map(|(_, message)| message)
}

/// The complaint with where it was raised (`mcp.servers.transport`, array indices left out).
fn complaint_at(steps: &[Step], content: toml::Table) -> Option<(String, String)> {
    let error = serde_path_to_error::deserialize::<_, Config>(nest(steps, content)).err()?;
    Some((error.path().to_string().replace("[0]", ""), error.inner().to_string()))
}

fn dotted(steps: &[Step]) -> String {
    steps.iter().map(|s| s.key.as_str()).collect::<Vec<_>>().join(".")
}

fn probe_table() -> toml::Table {
    let mut table = toml::Table::new();
    table.insert(PROBE.into(), toml::Value::Integer(0));
    table
}

/// The names serde lists after "expected" in an error message (toml adds a line "in `server`", which is not one).
fn expected_names(message: &str) -> Vec<String> {
    let message = message.lines().next().unwrap_or_default();
    let Some((_, expected)) = message.split_once("expected") else { return Vec::new() };
    expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The fields of the struct at `steps`, if a struct is there.
fn struct_fields(steps: &[Step]) -> Option<Vec<String>> {
    let message = complaint(steps, probe_table())?;
    if message.contains(&format!("unknown field `{PROBE}`")) {
        Some(expected_names(&message))
    } else {
        None
    }
}

/// Every key path the configuration accepts under `steps` (dotted, array and variant steps left out).
fn accepted_under(steps: &mut Vec<Step>, prefix: &str, keys: &mut BTreeSet<String>) {
    let Some(fields) = struct_fields(steps) else { return };
    for field in fields {
        let path = if prefix.is_empty() { field.clone() } else { format!("{prefix}.{field}") };
        let before = keys.len();
        for array in [false, true] {
            steps.push(Step { key: field.clone(), array, tag: None });
            if struct_fields(steps).is_some() {
                accepted_under(steps, &path, keys);
            } else if let Some((at, message)) = complaint_at(steps, toml::Table::new()) {
                // An internally tagged enum: "missing field `type`" right here; each variant is a struct of its own.
                let tag_key = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
                if let Some(tag_key) = tag_key.filter(|_| at == dotted(steps)) {
                    let tag_key = tag_key.to_owned();
                    keys.insert(format!("{path}.{tag_key}"));
                    let mut unknown = toml::Table::new();
                    unknown.insert(tag_key.clone(), toml::Value::String(PROBE.into()));
                    for variant in complaint(steps, unknown).map(|m| expected_names(&m)).unwrap_or_default() {
                        if let Some(step) = steps.last_mut() {
                            step.tag = Some((tag_key.clone(), variant));
                        }
                        accepted_under(steps, &path, keys);
                    }
                }
            }
            steps.pop();
            if keys.len() > before {
                break;
            }
        }
        if keys.len() == before {
            keys.insert(path);
        }
    }
}

/// Every key the configuration accepts, as dotted paths (`mcp.servers.transport.url`).
fn accepted_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    accepted_under(&mut Vec::new(), "", &mut keys);
    keys
}

/// Every key the example file documents, commented out or not, as dotted paths.
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches('#').trim_start();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            if let Some((name, _)) = header.split_once(']') {
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    // A header documents its table too (`[twilio.stream_parameters]`, a map of the user's names).
                    keys.insert(name.to_owned());
                    section = name.to_owned();
                    continue;
                }
            }
        }
        let Some((key, _)) = line.split_once('=') else { continue };
        let key = key.trim();
        let is_key = key.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_key {
            keys.insert(if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") });
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn example() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("parley.example.toml");
        std::fs::read_to_string(path).expect("parley.example.toml is readable")
    }

    #[test]
    fn the_probe_finds_nested_tables_arrays_and_tagged_variants() {
        let keys = accepted_keys();
        for key in [
            "server.listen",
            "stt.deepgram.api_key_env",
            "local.whisper.segmenter.end_silence_ms",
            "mcp.servers.name",
            "mcp.servers.transport.type",
            "mcp.servers.transport.url",
            "mcp.servers.transport.command",
            "twilio.stream_parameters",
        ] {
            assert!(keys.contains(key), "{key} not found among {keys:#?}");
        }
        assert!(!keys.iter().any(|k| k.starts_with("twilio.stream_parameters.")), "a map is one key: {keys:#?}");
    }

    #[test]
    fn the_example_documents_every_key_the_configuration_accepts() {
        let accepted = accepted_keys();
        let documented = documented_keys(&example());
        let missing: Vec<&String> = accepted.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "parley.example.toml does not document these keys the configuration accepts (add each under its \
             [section], commented out when it has no default):\n  {}",
            missing.iter().map(|k| k.as_str()).collect::<Vec<_>>().join("\n  ")
        );
    }

    #[test]
    fn the_example_documents_no_key_the_configuration_rejects() {
        let accepted = accepted_keys();
        // Keys inside a map (`[twilio.stream_parameters]` entries) are the user's own names.
        let inside_a_map = |key: &str| accepted.iter().any(|a| key.starts_with(&format!("{a}.")));
        // A section header names a table whose keys are accepted.
        let a_table = |key: &str| accepted.iter().any(|a| a.starts_with(&format!("{key}.")));
        let stale: Vec<String> = documented_keys(&example())
            .into_iter()
            .filter(|k| !accepted.contains(k) && !inside_a_map(k) && !a_table(k))
            .collect();
        assert!(
            stale.is_empty(),
            "parley.example.toml documents keys the configuration does not accept (renamed or removed?):\n  {}",
            stale.join("\n  ")
        );
    }

    #[test]
    fn documented_keys_are_read_from_comments_and_headers() {
        let text = "[stt]\nprovider = \"x\"\n# [stt.deepgram_flux]   # note\n# model = \"m\"\n# prose, not = a key?\n\
                    # [[mcp.servers]]\n# name = \"shop\"\n";
        let keys = documented_keys(text);
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            ["mcp.servers", "mcp.servers.name", "stt", "stt.deepgram_flux", "stt.deepgram_flux.model", "stt.provider"]
        );
    }
}
