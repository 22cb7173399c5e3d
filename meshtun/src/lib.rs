//! meshtun
