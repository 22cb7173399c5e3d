//! The `meshtun-controller` command.

fn main() {}
