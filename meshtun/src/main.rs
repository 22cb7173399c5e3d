//! The `meshtun` command.

fn main() {}
