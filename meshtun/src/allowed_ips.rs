//! Longest-prefix-match table.
