//! rtcdn bench client.
