//! The `rtcdn` claim of a token: which stream names it may publish and play.
//!
//! `{"rtcdn": {"publish": ["cam1", "studio-*"], "play": ["*"]}}`: a pattern is a name, a prefix
//! ending in `*`, or `*` alone for every name.

use serde::{Deserialize, Serialize};

use super::Action;

/// What a token allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Name patterns the holder may publish.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Name patterns the holder may play.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub play: Vec<String>,
}

impl Grant {
    /// Whether the grant covers `action` on `name`.
    pub fn allows(&self, action: Action, name: &str) -> bool {
        let patterns = match action {
            Action::Publish => &self.publish,
            Action::Play => &self.play,
        };
        patterns.iter().any(|p| pattern_matches(p, name))
    }
}

/// Whether `pattern` (a name, `prefix*` or `*`) covers `name`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("cam*", "cam"));
        assert!(pattern_matches("cam*", "cam12"));
        assert!(!pattern_matches("cam*", "ca"));
        assert!(!pattern_matches("cam*", "xcam"));
        assert!(pattern_matches("cam1", "cam1"));
        assert!(!pattern_matches("cam1", "cam12"));
        assert!(!pattern_matches("", "a"));
        // A '*' anywhere but the end is an ordinary character.
        assert!(!pattern_matches("c*m", "cam"));
    }

    #[test]
    fn grants_per_action() {
        let grant = Grant {
            publish: vec!["cam*".into()],
            play: vec!["*".into()],
        };
        assert!(grant.allows(Action::Publish, "cam2"));
        assert!(!grant.allows(Action::Publish, "other"));
        assert!(grant.allows(Action::Play, "other"));
        assert!(!Grant::default().allows(Action::Play, "x"));
    }
}
